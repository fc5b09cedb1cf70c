/**
 * The layering of cvm, checked in `make test` (docs/architecture.md explains the rooms).
 * Rules look at shipped sources only: a test may reach across rooms to set up what it checks.
 */
const notTest = "(\\.test\\.ts$|/test/|^test/|^bench/)";

module.exports = {
  forbidden: [
    {
      name: "guest-never-imports-host",
      comment: "The agent ships inside the measured image; host code there would widen what the TD runs and trusts.",
      severity: "error",
      from: { path: "^guest/", pathNot: notTest },
      to: { path: "^host/" },
    },
    {
      name: "shared-imports-only-shared",
      comment: "shared/ is used by both sides and by the tenant's verifier; it may not pull either side in.",
      severity: "error",
      from: { path: "^shared/", pathNot: notTest },
      to: { path: "^(host|guest|images)/" },
    },
    {
      name: "drivers-below-engine-and-api",
      comment: "A driver runs guests for the engine; it must not know the engine, the API or the CLI that sit above it.",
      severity: "error",
      from: { path: "^host/drivers/", pathNot: notTest },
      to: { path: "^host/(api|instances|cli|daemon\\.ts|main\\.ts)" },
    },
    {
      name: "store-is-the-bottom",
      comment: "The store persists records; everything above reads it, it reads nothing above it.",
      severity: "error",
      from: { path: "^host/store/", pathNot: notTest },
      to: { path: "^host/", pathNot: "^host/(store/|clock\\.ts$|logger\\.ts$)" },
    },
    {
      name: "only-the-api-and-daemon-use-the-api",
      comment: "Middleware, routes and the HTTP server are the API's own; services below it report through their own types.",
      severity: "error",
      from: { path: "^host/", pathNot: `${notTest}|^host/(api/|daemon\\.ts$|main\\.ts$)` },
      to: { path: "^host/api/" },
    },
    {
      name: "nothing-imports-the-cli",
      comment: "cvmctl is a client of the services; no service depends on it.",
      severity: "error",
      from: { path: "^(host|shared|guest)/", pathNot: `${notTest}|^host/cli/` },
      to: { path: "^host/cli/" },
    },
    {
      name: "jobs-only-schedule",
      comment: "host/jobs holds the scheduler; the work it runs lives with its subject.",
      severity: "error",
      from: { path: "^host/jobs/", pathNot: notTest },
      to: { path: "^host/", pathNot: "^host/(jobs/|clock\\.ts$|logger\\.ts$)" },
    },
    {
      name: "no-circular",
      comment: "A cycle between modules means two rooms that cannot be read, tested or moved apart.",
      severity: "error",
      from: { pathNot: notTest },
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: "node_modules" },
    exclude: { path: "^(node_modules|dist|images/out|images/cache)/" },
    tsConfig: { fileName: "tsconfig.check.json" },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { extensions: [".ts", ".js", ".mjs"] },
  },
};
