/** Resource shapes of the /v1 tenant API, as the contract spells them (snake_case on the wire). */

export const INSTANCE_STATUSES = ["provisioning", "ready", "failed", "terminating", "terminated"] as const;
export type InstanceStatus = (typeof INSTANCE_STATUSES)[number];

export const API_ERROR_CODES = [
  "invalid_request",
  "unauthenticated",
  "forbidden",
  "not_found",
  "conflict",
  "rate_limited",
  "internal_error",
  "unavailable",
] as const;
export type ApiErrorCode = (typeof API_ERROR_CODES)[number];

export interface SshEndpoint {
  host: string;
  port: number;
  user: string;
}

export interface InstanceRecord {
  name: string;
  status: InstanceStatus;
  agent: string;
  hostname: string;
  public_key: string;
  inference_mode: string;
  inference_model: string;
  egress_limit_bytes: number;
  failure_code: string | null;
  failure_message: string | null;
  terminated_reason: string | null;
  created_at: string;
  ready_at: string | null;
  terminated_at: string | null;
  /** Extension: how to reach the instance over SSH once it is ready. */
  ssh: SshEndpoint | null;
  /** Extension: egress the host counted for this instance (null before the first sample). */
  egress: { bytes: number; observed_at: string; blocked: boolean; block_applied_at: string | null } | null;
}

export interface UsageRecord {
  pricing: {
    period_start: string;
    period_end: string;
    subscription_cost_usd: string;
    instance_hours_included: number;
    overage_per_hour_usd: string;
  };
  usage: {
    instance_hours_used: number;
    inference_cost_usd: string;
    egress_bytes: number;
    egress_limit_bytes: number;
    egress_observed_at: string | null;
    egress_blocked: boolean;
    egress_block_applied_at: string | null;
  };
}

export interface InstanceEvent {
  seq: number;
  type: string;
  from_status: InstanceStatus | null;
  to_status: InstanceStatus | null;
  message: string | null;
  at: string;
}

export interface Envelope<T> {
  request_id: string;
  correlation_id: string | null;
  data?: T;
  error?: { code: ApiErrorCode; message: string; param?: string };
}

/** The contract's wire format for timestamps: ISO 8601 UTC, second precision. */
export function isoSeconds(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, "Z");
}
