#!/usr/bin/env bash
# The contract's quickstart (000-confidential-agents-api.txt, steps 2–6), verbatim. The caller exports
# API_BASE, TENANT_SLUG, CA_API_KEY and HOME (whose ~/.ssh holds the tenant key); only the exports of
# step 1 are left to the caller. QUICKSTART_SSH=1 also runs the SSH line of step 5 (commands for the
# remote shell come on this script's standard input). QUICKSTART_PART=create stops before step 6;
# QUICKSTART_PART=delete runs only step 6 for the exported INSTANCE_NAME.
set -eu
PART="${QUICKSTART_PART:-all}"

if [ "$PART" != delete ]; then

# 2. Test your API key
curl -sS "$API_BASE/v1/usage" \
-H "Authorization: Bearer $CA_API_KEY" \
| jq .

# 3. Create an instance
export SSH_PUBLIC_KEY="$(cat ~/.ssh/id_ed25519.pub)"
CREATE_RESPONSE="$(
curl -sS -X POST "$API_BASE/v1/instances" \
-H "Authorization: Bearer $CA_API_KEY" \
-H "Content-Type: application/json" \
--data "$(jq -n --arg public_key "$SSH_PUBLIC_KEY" '{
public_key: $public_key,
agent: "openclaw",
inference_mode: "default_gateway"
}')"
)"
echo "$CREATE_RESPONSE" | jq .
export INSTANCE_NAME="$(echo "$CREATE_RESPONSE" | jq -r '.data.name')"
export INSTANCE_HOSTNAME="$(echo "$CREATE_RESPONSE" | jq -r '.data.hostname')"

# 4. Get instance info
curl -sS "$API_BASE/v1/instances/$INSTANCE_NAME" \
-H "Authorization: Bearer $CA_API_KEY" \
| jq .

# 5. Poll until the instance is ready
while true; do
INSTANCE_RESPONSE="$(
curl -sS "$API_BASE/v1/instances/$INSTANCE_NAME" \
-H "Authorization: Bearer $CA_API_KEY"
)"
STATUS="$(echo "$INSTANCE_RESPONSE" | jq -r '.data.status')"
echo "status=$STATUS"
if [ "$STATUS" = "ready" ]; then
export INSTANCE_HOSTNAME="$(echo "$INSTANCE_RESPONSE" | jq -r '.data.hostname')"
break
fi
if [ "$STATUS" = "failed" ]; then
echo "$INSTANCE_RESPONSE" | jq .
exit 1
fi
sleep 15
done
echo "Instance is ready: $INSTANCE_HOSTNAME"

if [ "${QUICKSTART_SSH:-0}" = 1 ]; then
ssh -i ~/.ssh/id_ed25519 "$INSTANCE_HOSTNAME"
fi
fi

if [ "$PART" != create ]; then

# 6. Delete the instance
curl -sS -X DELETE "$API_BASE/v1/instances/$INSTANCE_NAME" \
-H "Authorization: Bearer $CA_API_KEY" \
| jq .
fi
