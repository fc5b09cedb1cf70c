import type { Metric, MetricValueWithName, Registry } from "prom-client";

/** One method + route + status: its request count and latency buckets. */
class Series {
  count = 0;
  sum = 0;
  /** Per bucket, not cumulative; the last slot is +Inf. */
  readonly perBucket: Float64Array;

  constructor(
    readonly method: string,
    readonly route: string,
    readonly status: string,
    buckets: number,
  ) {
    this.perBucket = new Float64Array(buckets + 1);
  }
}

/**
 * The tenant API's request counter and latency histogram (`cvm_api_requests_total`,
 * `cvm_api_request_duration_seconds`), exposed through cvmd's prom-client registry like every other
 * metric. They are tallied here rather than with prom-client's Counter and Histogram because they
 * are updated on every request: prom-client validates and hashes the label object on each call, and
 * in a CPU profile of cvmd under bench/api.bench.ts's GET load the two calls took ~1.4 us per
 * request. Here a request costs one map lookup; the exposition is built at scrape time.
 */
export class ApiRequestMetrics {
  private readonly series = new Map<string, Series>();

  constructor(
    registry: Registry,
    private readonly names: { requests: string; duration: string },
    private readonly buckets: readonly number[],
  ) {
    // prom-client's registry asks a metric only for name, help, type, get() and reset(); its typings
    // want one of its own classes (and an enum where the runtime uses strings), hence the cast.
    for (const m of [this.requestsMetric(), this.durationMetric()]) registry.registerMetric(m as unknown as Metric);
  }

  observe(method: string, route: string, status: number, seconds: number): void {
    const key = `${method} ${status} ${route}`;
    let s = this.series.get(key);
    if (s === undefined) {
      s = new Series(method, route, String(status), this.buckets.length);
      this.series.set(key, s);
    }
    s.count++;
    s.sum += seconds;
    let i = 0;
    while (i < this.buckets.length && seconds > this.buckets[i]!) i++;
    s.perBucket[i]!++;
  }

  private requestsMetric() {
    const name = this.names.requests;
    const meta = { name, help: "Tenant API requests by method, route template and HTTP status.", type: "counter" as const, aggregator: "sum" as const };
    return {
      ...meta,
      get: async () => ({
        ...meta,
        values: [...this.series.values()].map((s) => ({ labels: { method: s.method, route: s.route, status: s.status }, value: s.count })),
      }),
      reset: () => this.series.clear(),
    };
  }

  /** Latency by method and route: the series of one route are summed over their statuses. */
  private durationMetric() {
    const name = this.names.duration;
    const meta = { name, help: "Tenant API request latency (until the handler finished) by method and route template.", type: "histogram" as const, aggregator: "sum" as const };
    return {
      ...meta,
      get: async () => {
        const byRoute = new Map<string, { method: string; route: string; count: number; sum: number; perBucket: Float64Array }>();
        for (const s of this.series.values()) {
          const key = `${s.method} ${s.route}`;
          let r = byRoute.get(key);
          if (!r) byRoute.set(key, (r = { method: s.method, route: s.route, count: 0, sum: 0, perBucket: new Float64Array(this.buckets.length + 1) }));
          r.count += s.count;
          r.sum += s.sum;
          for (let i = 0; i < s.perBucket.length; i++) r.perBucket[i]! += s.perBucket[i]!;
        }
        const values: Array<MetricValueWithName<string>> = [];
        for (const r of byRoute.values()) {
          const labels = { method: r.method, route: r.route };
          let cumulative = 0;
          this.buckets.forEach((le, i) => {
            cumulative += r.perBucket[i]!;
            values.push({ metricName: `${name}_bucket`, labels: { ...labels, le }, value: cumulative });
          });
          values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: r.count });
          values.push({ metricName: `${name}_sum`, labels, value: r.sum });
          values.push({ metricName: `${name}_count`, labels, value: r.count });
        }
        return { ...meta, values };
      },
      reset: () => this.series.clear(),
    };
  }
}
