/**
 * Forward-only schema migrations; index + 1 is the PRAGMA user_version after applying it.
 * Never edit a shipped migration: append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  /* 1: tenants, keys, instances, events, idempotency */ `
  CREATE TABLE tenants (
    id            INTEGER PRIMARY KEY,
    slug          TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL,          -- unix ms; anchors the billing window
    subscription_cost_usd   TEXT NOT NULL,
    instance_hours_included INTEGER NOT NULL,
    overage_per_hour_usd    TEXT NOT NULL,
    suspended_at  INTEGER
  );

  CREATE TABLE api_keys (
    prefix        TEXT PRIMARY KEY,          -- the 8-char lookup id, not secret
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    secret_hash   BLOB NOT NULL,             -- SHA-256 of the 18-char secret
    created_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    expires_at    INTEGER
  );
  CREATE INDEX api_keys_tenant ON api_keys(tenant_id);

  CREATE TABLE instances (
    id            TEXT PRIMARY KEY,          -- internal id, never shown to tenants
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    name          TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('provisioning','ready','failed','terminating','terminated')),
    agent         TEXT NOT NULL,
    public_key    TEXT NOT NULL,
    inference_mode  TEXT NOT NULL,
    inference_model TEXT NOT NULL,
    egress_limit_bytes INTEGER NOT NULL,
    failure_code    TEXT,
    failure_message TEXT,
    terminated_reason TEXT,
    created_at    INTEGER NOT NULL,
    ready_at      INTEGER,
    failed_at     INTEGER,
    terminating_at INTEGER,
    terminated_at INTEGER,
    ssh_host      TEXT,
    ssh_port      INTEGER,
    ssh_user      TEXT,
    runtime       TEXT,                      -- driver-owned JSON (pid, CID, tap, ...)
    next_event_seq INTEGER NOT NULL DEFAULT 1,
    -- Names are never reused: rows are kept, so the pair stays unique forever.
    UNIQUE (tenant_id, name)
  );
  CREATE INDEX instances_status ON instances(status);

  CREATE TABLE instance_events (
    instance_id   TEXT NOT NULL REFERENCES instances(id),
    seq           INTEGER NOT NULL,
    type          TEXT NOT NULL,
    from_status   TEXT,
    to_status     TEXT,
    message       TEXT,
    at            INTEGER NOT NULL,
    PRIMARY KEY (instance_id, seq)
  );

  CREATE TABLE idempotency_keys (
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status_code   INTEGER NOT NULL,
    response      TEXT NOT NULL,             -- the original data object, JSON
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, key)
  );
  CREATE INDEX idempotency_created ON idempotency_keys(created_at);
  `,
  /* 2: egress — latest host/guest view per instance, plus a sample history */ `
  CREATE TABLE egress_state (
    instance_id       TEXT PRIMARY KEY REFERENCES instances(id),
    limit_bytes       INTEGER NOT NULL,
    bytes             INTEGER NOT NULL DEFAULT 0,   -- admitted under the cap (host nft counter)
    packets           INTEGER NOT NULL DEFAULT 0,
    quota_used_bytes  INTEGER NOT NULL DEFAULT 0,
    after_block_bytes INTEGER NOT NULL DEFAULT 0,
    after_block_packets INTEGER NOT NULL DEFAULT 0,
    dropped_bytes     INTEGER NOT NULL DEFAULT 0,
    dropped_packets   INTEGER NOT NULL DEFAULT 0,
    blocked           INTEGER NOT NULL DEFAULT 0,
    block_applied_at  INTEGER,
    observed_at       INTEGER,
    guest_bytes       INTEGER,
    guest_packets     INTEGER,
    guest_sampled_at  INTEGER
  );

  CREATE TABLE egress_samples (
    instance_id   TEXT NOT NULL REFERENCES instances(id),
    at            INTEGER NOT NULL,
    source        TEXT NOT NULL CHECK (source IN ('host','guest')),
    bytes         INTEGER NOT NULL,
    packets       INTEGER NOT NULL
  );
  CREATE INDEX egress_samples_at ON egress_samples(at);
  CREATE INDEX egress_samples_instance ON egress_samples(instance_id, at);
  `,
  /* 3: inference gateway — one row per request that reached an upstream (host/gateway) */ `
  CREATE TABLE inference_requests (
    id            INTEGER PRIMARY KEY,
    request_id    TEXT NOT NULL UNIQUE,      -- the gateway's id, also the x-request-id the guest sees
    tenant_id     INTEGER NOT NULL REFERENCES tenants(id),
    instance_id   TEXT NOT NULL REFERENCES instances(id),
    model         TEXT NOT NULL,
    endpoint      TEXT NOT NULL CHECK (endpoint IN ('chat.completions','embeddings')),
    stream        INTEGER NOT NULL,
    status        INTEGER NOT NULL,          -- HTTP status returned to the guest
    outcome       TEXT NOT NULL CHECK (outcome IN ('ok','upstream_error','cancelled','failed')),
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    estimated     INTEGER NOT NULL,          -- 1: counted by the gateway, the upstream reported no usage
    price_input_micro_usd  INTEGER NOT NULL, -- per million tokens, as priced when the request ran
    price_output_micro_usd INTEGER NOT NULL,
    cost_pico_usd INTEGER NOT NULL,          -- exact: tokens x micro-USD per Mtok, in 1e-12 USD
    started_at    INTEGER NOT NULL,          -- unix ms
    at            INTEGER NOT NULL           -- unix ms of completion; places the cost in a billing window
  );
  CREATE INDEX inference_requests_tenant_at ON inference_requests(tenant_id, at);
  CREATE INDEX inference_requests_instance_at ON inference_requests(instance_id, at);
  `,
  /* 4: warm pool — guests booted from an image and prepared without a tenant, and operator settings */ `
  CREATE TABLE pool_guests (
    id            TEXT PRIMARY KEY,          -- also names its run dir, tap and pre-claim egress rules
    image_id      TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('booting','warm','claimed','failed','gone')),
    runtime       TEXT,                      -- JSON: what the driver recorded (pid, CID, tap...)
    created_at    INTEGER NOT NULL,
    warm_at       INTEGER,
    claimed_at    INTEGER,
    instance_id   TEXT REFERENCES instances(id),
    ended_at      INTEGER,
    note          TEXT                       -- why it failed or was drained
  );
  CREATE INDEX pool_guests_status ON pool_guests(status, image_id);

  CREATE TABLE settings (
    key           TEXT PRIMARY KEY,
    value         TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
  );
  `,
  /* 5: a tenant's list is read a page at a time in (created_at, name) order, and its usage sums
        its billable intervals: both by index, not by reading every row of the tenant */ `
  CREATE INDEX instances_tenant_created ON instances(tenant_id, created_at, name);
  -- Covering: the usage sum reads the index alone, never the instance rows.
  CREATE INDEX instances_tenant_ready ON instances(tenant_id, ready_at, terminating_at, failed_at, terminated_at);
  `,
];
