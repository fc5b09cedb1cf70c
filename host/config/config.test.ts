import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, test } from "vitest";
import { ConfigError, loadConfig, SETTING_NAMES, type Config } from "./index.js";

const dir = mkdtempSync(join(tmpdir(), "cvm-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const README = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
const SECRET = Buffer.alloc(32, 9).toString("base64");
const secretFile = join(dir, "tsig.key");
writeFileSync(secretFile, SECRET, { mode: 0o600 });
const modelsFile = join(dir, "models.json");
writeFileSync(
  modelsFile,
  JSON.stringify({ default: "m1", models: [{ id: "m1", upstream: { base_url: "http://127.0.0.1:9/v1", api_key_env: null }, price_per_mtok_usd: { input: "1.00", output: "2.00" } }] }),
);

/**
 * A value other than the default for every setting, with the settings it needs beside it (a TSIG
 * key is only read with rfc2136). A new setting without a sample fails the round-trip test.
 */
const RFC2136 = { CVM_DNS_PROVIDER: "rfc2136", CVM_DNS_UPDATE_SERVER: "192.0.2.53:53", CVM_DNS_TSIG_KEY_NAME: "cvmd-key", CVM_DNS_TSIG_SECRET: SECRET };
const SAMPLES: Record<string, Record<string, string>> = {
  CVM_DATA_DIR: { CVM_DATA_DIR: "/srv/cvm" },
  CVM_DATABASE_URL: { CVM_DATABASE_URL: "postgres://cvm:secret@db.example:5432/cvm" },
  CVM_LISTEN: { CVM_LISTEN: "[::1]:8443" },
  CVM_BASE_DOMAIN: { CVM_BASE_DOMAIN: "cvm.example.com" },
  CVM_PRICE_SUBSCRIPTION_USD: { CVM_PRICE_SUBSCRIPTION_USD: "99.00" },
  CVM_PRICE_INCLUDED_HOURS: { CVM_PRICE_INCLUDED_HOURS: "10" },
  CVM_PRICE_OVERAGE_PER_HOUR_USD: { CVM_PRICE_OVERAGE_PER_HOUR_USD: "1.25" },
  CVM_EGRESS_LIMIT_BYTES: { CVM_EGRESS_LIMIT_BYTES: "1000" },
  CVM_EGRESS_POLL_SECONDS: { CVM_EGRESS_POLL_SECONDS: "5" },
  CVM_MODELS_FILE: { CVM_MODELS_FILE: modelsFile },
  CVM_DRIVER: { CVM_DRIVER: "none" },
  CVM_LOG_LEVEL: { CVM_LOG_LEVEL: "debug" },
  CVM_SHUTDOWN_GRACE_MS: { CVM_SHUTDOWN_GRACE_MS: "2500" },
  CVM_METRICS_LISTEN: { CVM_METRICS_LISTEN: "127.0.0.1:9464" },
  CVM_RATE_LIMIT: { CVM_RATE_LIMIT: "60" },
  CVM_RATE_LIMIT_PER_ADDRESS: { CVM_RATE_LIMIT_PER_ADDRESS: "7" },
  CVM_AUTH_FAILURE_LIMIT: { CVM_AUTH_FAILURE_LIMIT: "3" },
  CVM_TRUSTED_PROXIES: { CVM_TRUSTED_PROXIES: "127.0.0.1,fd00::/8" },
  CVM_TLS_CERT: { CVM_TLS_CERT: "/etc/cvm/tls.crt", CVM_TLS_KEY: "/etc/cvm/tls.key" },
  CVM_TLS_KEY: { CVM_TLS_CERT: "/etc/cvm/tls.crt", CVM_TLS_KEY: "/etc/cvm/tls.key" },
  CVM_COLLATERAL_FILE: { CVM_COLLATERAL_FILE: "/etc/cvm/collateral.json" },
  CVM_PCCS_URL: { CVM_PCCS_URL: "https://pccs.example:8081" },
  CVM_ACCEPT_TCB_STATUS: { CVM_ACCEPT_TCB_STATUS: "UpToDate,OutOfDate" },
  CVM_WARM_POOL_SIZE: { CVM_WARM_POOL_SIZE: "3" },
  CVM_WARM_POOL_REFILL_SECONDS: { CVM_WARM_POOL_REFILL_SECONDS: "30" },
  CVM_CAPACITY_MEMORY_MIB: { CVM_CAPACITY_MEMORY_MIB: "12345" },
  CVM_CAPACITY_VCPUS: { CVM_CAPACITY_VCPUS: "7" },
  CVM_MAX_CONCURRENT_BOOTS: { CVM_MAX_CONCURRENT_BOOTS: "3" },
  CVM_PROFILE: { CVM_PROFILE: "tdx" },
  CVM_ACCEL: { CVM_ACCEL: "tcg" },
  CVM_IMAGE_DIR: { CVM_IMAGE_DIR: "/srv/images/current" },
  CVM_VM_MEMORY_MIB: { CVM_VM_MEMORY_MIB: "4096" },
  CVM_VM_VCPUS: { CVM_VM_VCPUS: "4" },
  CVM_TDX_FIRMWARE: { CVM_TDX_FIRMWARE: "/opt/tdvf/OVMF.fd" },
  CVM_GUEST_GATEWAY_URL: { CVM_GUEST_GATEWAY_URL: "http://127.0.0.1:18791/v1" },
  CVM_BOOT_TIMEOUT_S: { CVM_BOOT_TIMEOUT_S: "60" },
  CVM_SETUP_TIMEOUT_S: { CVM_SETUP_TIMEOUT_S: "61" },
  CVM_SSH_TIMEOUT_S: { CVM_SSH_TIMEOUT_S: "62" },
  CVM_SETUP_ACK_TIMEOUT_S: { CVM_SETUP_ACK_TIMEOUT_S: "33" },
  CVM_SERIAL_LOG_MAX_KIB: { CVM_SERIAL_LOG_MAX_KIB: "128" },
  CVM_NETNS: { CVM_NETNS: "cvm-other" },
  CVM_GUEST_POOL: { CVM_GUEST_POOL: "10.88.0.0/24" },
  CVM_GUEST_LINK: { CVM_GUEST_LINK: "10.88.255.0/31" },
  CVM_NAT_TABLE: { CVM_NAT_TABLE: "other_nat" },
  CVM_EGRESS_TABLE: { CVM_EGRESS_TABLE: "other_egress" },
  CVM_HOST_VETH: { CVM_HOST_VETH: "cvm-h9" },
  CVM_NS_VETH: { CVM_NS_VETH: "cvm-n9" },
  CVM_GUEST_NAT: { CVM_GUEST_NAT: "on" },
  CVM_SSH_LISTEN: { CVM_SSH_LISTEN: "0.0.0.0" },
  CVM_SSH_PORTS: { CVM_SSH_PORTS: "30000-30010" },
  CVM_DNS_PROVIDER: RFC2136,
  CVM_DNS_LISTEN: { CVM_DNS_LISTEN: "127.0.0.1:5353" },
  CVM_DNS_TTL: { CVM_DNS_TTL: "60" },
  CVM_DNS_NEGATIVE_TTL: { CVM_DNS_NEGATIVE_TTL: "5" },
  CVM_DNS_NAMESERVERS: { CVM_DNS_NAMESERVERS: "ns1.operator.example,ns2.operator.example" },
  CVM_DNS_HOSTMASTER: { CVM_DNS_HOSTMASTER: "ops.operator.example" },
  CVM_DNS_HOST_ADDRESSES: { CVM_DNS_HOST_ADDRESSES: "203.0.113.7" },
  CVM_DNS_UPDATE_SERVER: { ...RFC2136, CVM_DNS_UPDATE_SERVER: "192.0.2.54:5353" },
  CVM_DNS_UPDATE_ZONE: { ...RFC2136, CVM_BASE_DOMAIN: "cvm.example.com", CVM_DNS_UPDATE_ZONE: "example.com" },
  CVM_DNS_TSIG_KEY_NAME: { ...RFC2136, CVM_DNS_TSIG_KEY_NAME: "other-key" },
  CVM_DNS_TSIG_SECRET: { ...RFC2136, CVM_DNS_TSIG_SECRET: Buffer.alloc(20, 1).toString("base64") },
  CVM_DNS_TSIG_SECRET_FILE: { ...RFC2136, CVM_DNS_TSIG_SECRET: "", CVM_DNS_TSIG_SECRET_FILE: secretFile },
  CVM_GATEWAY_BUDGET_USD: { CVM_GATEWAY_BUDGET_USD: "50.00" },
  CVM_GATEWAY_RPM: { CVM_GATEWAY_RPM: "10" },
  CVM_GATEWAY_BUFFER_MIB: { CVM_GATEWAY_BUFFER_MIB: "4" },
  CVM_GATEWAY_MAX_OUTPUT_TOKENS: { CVM_GATEWAY_MAX_OUTPUT_TOKENS: "512" },
  CVM_GATEWAY_CONCURRENCY: { CVM_GATEWAY_CONCURRENCY: "2" },
  CVM_GATEWAY_TIMEOUT_MS: { CVM_GATEWAY_TIMEOUT_MS: "5000" },
  CVM_GATEWAY_TOTAL_TIMEOUT_MS: { CVM_GATEWAY_TOTAL_TIMEOUT_MS: "9000" },
};

let n = 0;
function fileWith(settings: Record<string, unknown>): string {
  const path = join(dir, `cvmd-${n++}.json`);
  writeFileSync(path, JSON.stringify(settings));
  return path;
}

const CWD = "/srv/cvm";
const fromFile = (settings: Record<string, string>): Config => loadConfig({ CVM_CONFIG_FILE: fileWith(settings) }, CWD);
/** Buffers and nested objects compared by value. */
const plain = (c: Config): unknown => JSON.parse(JSON.stringify(c));

/** The first column of the README's configuration table: every `CVM_*` it names. */
function readmeVariables(): string[] {
  const section = README.slice(README.indexOf("## Configuration"), README.indexOf("\n## ", README.indexOf("## Configuration") + 1));
  const names: string[] = [];
  for (const line of section.split("\n")) {
    const first = /^\| ([^|]+) \|/.exec(line)?.[1] ?? "";
    for (const m of first.matchAll(/`(CVM_[A-Z0-9_]+)`/g)) names.push(m[1]!);
  }
  return names;
}

describe("the README's configuration table is the schema", () => {
  test("every setting is in the table, and the table has nothing else", () => {
    const documented = readmeVariables();
    expect(documented.length).toBeGreaterThan(40);
    expect(new Set(documented).size, "a variable documented twice").toBe(documented.length);
    expect([...documented].sort()).toEqual([...SETTING_NAMES].sort());
  });
});

describe("CVM_CONFIG_FILE", () => {
  test("a sample for every setting (add one with each new setting)", () => {
    expect(Object.keys(SAMPLES).sort()).toEqual([...SETTING_NAMES].sort());
  });

  test.each(Object.entries(SAMPLES))("%s round-trips through the file, and means the same as in the environment", (name, sample) => {
    const viaFile = fromFile(sample);
    expect(plain(viaFile)).toEqual(plain(loadConfig(sample, CWD)));
    // Without this one variable (its companions kept) the result differs, or the rest is refused:
    // the file's value was read, not a default that happens to match.
    const { [name]: _dropped, ...without } = sample;
    let other: unknown;
    try {
      other = plain(fromFile(without));
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      return;
    }
    expect(other).not.toEqual(plain(viaFile));
  });

  test("the environment wins over the file; an empty value in either means the default", () => {
    const file = fileWith({ CVM_PROFILE: "tdx", CVM_VM_VCPUS: 4, CVM_RATE_LIMIT: "60", CVM_LOG_LEVEL: "" });
    const c = loadConfig({ CVM_CONFIG_FILE: file, CVM_PROFILE: "plain", CVM_RATE_LIMIT: "" });
    expect(c.vm.profile).toBe("plain");
    expect(c.vm.vcpus).toBe(4); // JSON numbers are fine
    expect(c.rateLimit.perKeyPerMinute).toBe(60); // empty in the environment: the file's value
    expect(c.logLevel).toBe("info");
  });

  test("the file `make install` ships loads as it is", () => {
    const shipped = new URL("../../systemd/cvmd.json", import.meta.url).pathname;
    expect(loadConfig({ CVM_CONFIG_FILE: shipped }).dataDir).toBe("/var/lib/cvm");
  });

  test("the VM settings come from the file too (the silent downgrade of issue 16)", () => {
    expect(fromFile({ CVM_PROFILE: "tdx" }).vm.profile).toBe("tdx");
    expect(loadConfig({}).vm.profile).toBe("plain");
  });

  test.each([
    [{ CVM_PROFIL: "tdx" }, /^CVM_PROFIL in CVM_CONFIG_FILE=.*: not a setting of cvmd/],
    [{ CVM_CONFIG_FILE: "/etc/other.json" }, /^CVM_CONFIG_FILE in CVM_CONFIG_FILE=/],
    [{ CVM_PROFILE: { name: "tdx" } }, /^CVM_CONFIG_FILE=.*: CVM_PROFILE: expected a string or number, not an object/],
    [["CVM_PROFILE"], /^CVM_CONFIG_FILE=.*: not a JSON object/],
  ])("a file with %j is refused, naming the key", (content, message) => {
    expect(() => loadConfig({ CVM_CONFIG_FILE: fileWith(content as Record<string, unknown>) })).toThrow(message);
  });

  test("an unreadable or malformed file is refused, naming CVM_CONFIG_FILE", () => {
    const broken = join(dir, "broken.json");
    writeFileSync(broken, "{CVM_PROFILE: tdx");
    for (const path of [broken, join(dir, "missing.json")]) {
      let err: unknown;
      try {
        loadConfig({ CVM_CONFIG_FILE: path });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).variable).toBe("CVM_CONFIG_FILE");
      expect((err as Error).message).toMatch(new RegExp(`^CVM_CONFIG_FILE=${path}: `));
    }
  });
});

describe("one error format", () => {
  test.each([
    ["CVM_VM_VCPUS", "0", "expected an integer between 1 and 256"],
    ["CVM_BOOT_TIMEOUT_S", "1.5", "expected an integer between 5 and 86400"],
    ["CVM_DNS_TTL", "-1", "expected an integer between 1 and 86400"],
    ["CVM_GATEWAY_RPM", "fast", "expected an integer between 0 and 1000000"],
    ["CVM_PRICE_INCLUDED_HOURS", "1e3", "expected an integer between 0 and 1000000"],
    ["CVM_PROFILE", "sev", "expected plain or tdx"],
    ["CVM_ACCEL", "hvf", "expected kvm, tcg or auto"],
    ["CVM_GUEST_NAT", "yes", "expected on or off"],
    ["CVM_GUEST_POOL", "10.77.0.0", "expected an IPv4 network such as 10.77.0.0/24"],
    ["CVM_SSH_LISTEN", "localhost", "expected an IP address such as 127.0.0.1"],
    ["CVM_SSH_PORTS", "22-80", "expected a range such as 22200-22999 above 1023"],
    ["CVM_GUEST_GATEWAY_URL", "ftp://x", "expected an http(s) URL, e.g. http://127.0.0.1:18790/v1"],
    ["CVM_EGRESS_POLL_SECONDS", "7", "must divide 60 (1, 2, 3, 4, 5, 6, 10, 12, 15, 20 or 30)"],
    ["CVM_LISTEN", "8080", "expected host:port, e.g. 127.0.0.1:8080"],
    ["CVM_NETNS", "a b", "not a valid name (letters, digits, _ and -; up to 32)"],
    ["CVM_GATEWAY_BUDGET_USD", "-5", "expected a USD amount such as 50.00, or none"],
    ["CVM_TRUSTED_PROXIES", "10.0.0.0/33", "expected comma-separated IP addresses or CIDRs, e.g. 127.0.0.1,10.0.0.0/8"],
    ["CVM_PCCS_URL", "pccs.example:8081", "expected an http(s) URL, e.g. https://pccs.example:8081"],
  ])("%s=%s, from the environment or the file: one line naming the variable", (name, value, expected) => {
    for (const load of [() => loadConfig({ [name]: value }), () => fromFile({ [name]: value })]) {
      let err: unknown;
      try {
        load();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).variable).toBe(name);
      expect((err as Error).message).toBe(`${name}=${value}: ${expected}`);
    }
  });

  test("a secret is named, never echoed", () => {
    const bad = "this is the secret!";
    expect(() => loadConfig({ ...RFC2136, CVM_DNS_TSIG_SECRET: bad })).toThrow(/^CVM_DNS_TSIG_SECRET: not base64$/);
    // A database URL may carry a password.
    expect(() => loadConfig({ CVM_DATABASE_URL: "mysql://cvm:hunter2@db/cvm" })).toThrow(/^CVM_DATABASE_URL: expected a postgres:\/\/ URL, e.g. postgres:\/\/cvm@db.example\/cvm$/);
  });
});

test("the result is frozen all the way down, durations are milliseconds", () => {
  const c = loadConfig({ CVM_BOOT_TIMEOUT_S: "7" });
  expect(Object.isFrozen(c)).toBe(true);
  expect(Object.isFrozen(c.vm)).toBe(true);
  expect(Object.isFrozen(c.vm.timeouts)).toBe(true);
  expect(Object.isFrozen(c.gatewayLimits)).toBe(true);
  expect(Object.isFrozen(c.pricing)).toBe(true);
  expect(Object.isFrozen(c.trustedProxies)).toBe(true);
  expect(Object.isFrozen(c.dns.nameservers)).toBe(true);
  expect(c.vm.timeouts).toEqual({ bootMs: 7000, setupAckMs: 120_000, setupMs: 900_000, sshMs: 120_000 });
});
