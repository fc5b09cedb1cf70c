# Sends hand-made Ethernet frames for the tap-guard tests (node has no AF_PACKET): the frames a root tenant
# could write to its NIC. Usage: raw-frame.py <iface> <count> <hex frame>. Bounded by count; prints one JSON line.
import json, socket, sys, time

iface, count, frame = sys.argv[1], int(sys.argv[2]), bytes.fromhex(sys.argv[3])
if count < 1 or count > 1000:
    sys.exit("count must be 1..1000")
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
for _ in range(count):
    s.send(frame)
    time.sleep(0.005)
print(json.dumps({"sent": count}))
