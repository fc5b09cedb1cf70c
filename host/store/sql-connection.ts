export type SqlValue = string | number | bigint | null | Buffer;

export type Dialect = "sqlite" | "postgres";

/** What a transaction is for: a store's writes, or one schema migration (see `SqlConnection.begin`). */
export type TransactionKind = "write" | "migration";

/**
 * One connection to the database, in its server's dialect. The stores write each statement once, in
 * the SQL that SQLite and PostgreSQL share, with SQLite's `?` / `?NNN` placeholders; a connection
 * turns that into what its server runs. `Database` builds transactions, migrations and the change
 * signals of the read caches on top of it.
 */
export interface SqlConnection {
  readonly dialect: Dialect;
  /** Statements without parameters, several at once (migrations). */
  exec(sql: string): Promise<void>;
  run(sql: string, params: SqlValue[]): Promise<{ changes: number }>;
  get<T>(sql: string, params: SqlValue[]): Promise<T | undefined>;
  all<T>(sql: string, params: SqlValue[]): Promise<T[]>;
  /**
   * Opens a transaction in which every statement of this connection runs until `commit` or
   * `rollback`. A `write` behaves as if it ran alone: SQLite takes the write lock at once (BEGIN
   * IMMEDIATE), PostgreSQL runs it SERIALIZABLE. A `migration` also waits for any other process
   * migrating the same database, and reads the schema version that process left.
   */
  begin(kind: TransactionKind): Promise<void>;
  commit(): Promise<void>;
  rollback(): Promise<void>;
  /** How many migrations the database has had (0: a new one). */
  schemaVersion(): Promise<number>;
  /** Inside the migration's transaction. */
  setSchemaVersion(version: number): Promise<void>;
  /** A migration, written in SQLite's DDL, as this dialect runs it. */
  migrationSql(sql: string): string;
  /** Whether `err` broke the unique key of `table` over exactly `columns`. */
  isUniqueViolation(err: unknown, table: string, columns: readonly string[]): boolean;
  close(): Promise<void>;
}
