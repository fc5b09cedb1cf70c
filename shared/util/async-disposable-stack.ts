/**
 * The part of TC39's AsyncDisposableStack that cvmd uses (defer, adopt, move, disposeAsync), with
 * the standard's semantics: disposal runs in reverse order of registration, every callback runs even
 * when an earlier one throws, and several failures come out as one SuppressedError chain whose
 * outermost `error` is the last to fail. Node 20, which package.json still allows, has neither
 * AsyncDisposableStack nor SuppressedError, and the registry's polyfill (disposablestack) brings
 * es-abstract and a dozen other shim packages for what is ~60 lines here. Once the runtime floor has the global, delete this file and drop the
 * import: the callers use only the standard's names.
 */

type Disposer = () => unknown;

/** The standard's SuppressedError where the runtime has it; a look-alike with the same fields where not. */
export const SuppressedError: new (error: unknown, suppressed: unknown, message?: string) => Error & { error: unknown; suppressed: unknown } =
  (globalThis as { SuppressedError?: never }).SuppressedError ??
  class SuppressedError extends Error {
    override name = "SuppressedError";
    constructor(
      readonly error: unknown,
      readonly suppressed: unknown,
      message = "An error was suppressed during disposal.",
    ) {
      super(message);
    }
  };

export class AsyncDisposableStack {
  #disposers: Disposer[] = [];
  #disposed = false;

  get disposed(): boolean {
    return this.#disposed;
  }

  /** Registers `onDisposeAsync` to run at disposal. */
  defer(onDisposeAsync: () => unknown): void {
    this.#assertOpen();
    this.#disposers.push(onDisposeAsync);
  }

  /** Registers `onDisposeAsync(value)` to run at disposal and returns `value`. */
  adopt<T>(value: T, onDisposeAsync: (value: T) => unknown): T {
    this.#assertOpen();
    this.#disposers.push(() => onDisposeAsync(value));
    return value;
  }

  /** Hands every registration to a new stack; this one ends disposed, with nothing left to run. */
  move(): AsyncDisposableStack {
    this.#assertOpen();
    const next = new AsyncDisposableStack();
    next.#disposers = this.#disposers;
    this.#disposers = [];
    this.#disposed = true;
    return next;
  }

  /** Runs the registrations last to first; a second call does nothing. */
  async disposeAsync(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    const disposers = this.#disposers;
    this.#disposers = [];
    let failed = false;
    let thrown: unknown;
    for (let i = disposers.length - 1; i >= 0; i--) {
      try {
        await disposers[i]!();
      } catch (err) {
        thrown = failed ? new SuppressedError(err, thrown) : err;
        failed = true;
      }
    }
    if (failed) throw thrown;
  }

  #assertOpen(): void {
    if (this.#disposed) throw new ReferenceError("AsyncDisposableStack already disposed");
  }
}
