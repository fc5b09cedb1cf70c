/**
 * A bounded map of rows read from the database, each tagged with the generation (see `ChangeTracker`)
 * taken *before* its read. An entry is served only while the generation is still the same, so a
 * read that raced with a write is dropped at the next lookup instead of being served stale.
 * `maxAgeMs` bounds how long a change made behind our back (an operator's sqlite3 shell, a writer
 * that does not signal) can stay unseen; the writers in this code base all signal.
 */
/** Backstop for a change made without signalling; signalled changes apply at once. */
export const UNSIGNALLED_CHANGE_MAX_AGE_MS = 5_000;

export class ReadCache<K, V> {
  private readonly entries = new Map<K, { value: V; generation: string | number; at: number }>();

  constructor(
    private readonly maxEntries: number,
    private readonly maxAgeMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  get size(): number {
    return this.entries.size;
  }

  get(key: K, generation: string | number): V | undefined {
    const e = this.entries.get(key);
    if (e === undefined) return undefined;
    if (e.generation !== generation || this.now() - e.at > this.maxAgeMs) {
      this.entries.delete(key);
      return undefined;
    }
    return e.value;
  }

  set(key: K, generation: string | number, value: V): void {
    if (!this.entries.delete(key) && this.entries.size >= this.maxEntries) {
      // Oldest insertion first: cheap, and a hot entry that is evicted just costs one read.
      const oldest = this.entries.keys().next();
      if (!oldest.done) this.entries.delete(oldest.value);
    }
    this.entries.set(key, { value, generation, at: this.now() });
  }

  delete(key: K): void {
    this.entries.delete(key);
  }
}
