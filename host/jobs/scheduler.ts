import cron, { type ScheduledTask } from "node-cron";
import type { Logger } from "pino";

export interface Job {
  name: string;
  /** node-cron expression; six fields when seconds matter. */
  schedule: string;
  run(): Promise<unknown>;
}

/** The daemon's periodic work. Runs never overlap per job, and a failing run is logged, not fatal. */
export class Scheduler {
  private readonly tasks: ScheduledTask[] = [];

  constructor(private readonly logger: Logger) {}

  add(job: Job): void {
    if (!cron.validate(job.schedule)) throw new Error(`job ${job.name}: invalid schedule ${job.schedule}`);
    const task = cron.schedule(
      job.schedule,
      async () => {
        try {
          await job.run();
        } catch (err) {
          this.logger.error({ err, job: job.name }, "scheduled job failed");
        }
      },
      { name: job.name, noOverlap: true },
    );
    this.tasks.push(task);
  }

  async stop(): Promise<void> {
    await Promise.all(this.tasks.map((t) => t.destroy()));
    this.tasks.length = 0;
  }
}
