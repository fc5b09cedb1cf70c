// The API benchmark's load generator, in a process of its own so that it shares no event loop or
// heap with the test runner. Takes autocannon options as one JSON argument, prints the figures as
// JSON.
import autocannon from "autocannon";

const opts = JSON.parse(process.argv[2]!) as autocannon.Options;
const r = await autocannon(opts);
process.stdout.write(JSON.stringify({ rps: r.requests.average, p99: r.latency.p99, non2xx: r.non2xx, errors: r.errors }) + "\n");
