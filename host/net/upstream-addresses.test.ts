import { expect, test } from "vitest";

import { upstreamAddresses, type Lookup } from "./upstream-addresses.js";

/** TEST DOUBLE of the resolver: no lookup may leave the machine from a unit test. */
const lookupDouble: Lookup = async (host) => {
  if (host === "api.example.test") return [{ address: "203.0.113.7", family: 4 }, { address: "2001:db8::7", family: 6 }, { address: "203.0.113.8", family: 4 }];
  throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${host}`), { code: "ENOTFOUND" });
};

test("literal IPv4 kept, names resolved to their IPv4 addresses, IPv6 ignored, duplicates once", async () => {
  const got = await upstreamAddresses(
    ["http://127.0.0.1:11434/v1", "https://api.example.test/v1", "https://api.example.test/v2", "http://[2001:db8::1]/v1"],
    lookupDouble,
  );
  expect(got).toEqual(["127.0.0.1", "203.0.113.7", "203.0.113.8"]);
});

test("a name that does not resolve fails with the reason", async () => {
  await expect(upstreamAddresses(["https://nowhere.example.test/v1"], lookupDouble)).rejects.toThrow(
    /cannot resolve inference upstream nowhere\.example\.test .*ENOTFOUND/,
  );
});
