import { Command, CommanderError, type CommandUnknownOpts, type Help } from "@commander-js/extra-typings";
import { CliError, cliContext, UsageError, type CliContext, type Io } from "./context.js";
import { consoleAttach, imageAdd, imageList, imageRm, imageUse } from "./vm-commands.js";
import { netnsStatus, netnsTakeover } from "./netns-commands.js";
import { backup, instanceCleanup, instanceDelete, keyRotate, restore } from "./ops-commands.js";
import { poolResize, poolStatus } from "./pool-commands.js";
import { instancesList, keyCreate, keyList, keyRevoke, tenantCreate, tenantList, tenantSuspend } from "./tenant-commands.js";

const JSON_FLAG = ["--json", "print JSON instead of text"] as const;

/**
 * Every cvmctl command with the options it takes and nothing else; `done` receives a command's exit
 * status, since commander ignores what an action returns.
 */
function commandTree(ctx: CliContext, done: (code: number) => void): { program: Command; groups: Set<CommandUnknownOpts> } {
  const groups = new Set<CommandUnknownOpts>();
  const group = (name: string, description: string) => {
    const g = program.command(name).description(description);
    groups.add(g);
    return g;
  };
  const program = new Command("cvmctl")
    .description("Operator CLI of cvmd. Works on the data dir's database while cvmd runs.")
    // Our own `help` command below takes a command path (`help tenant create`); commander's takes one word.
    .helpCommand(false)
    // A command's options belong to it alone: without this, `pool resize 2 --json` was read as `pool --json`.
    .enablePositionalOptions()
    .addHelpText("after", "\nEnvironment: CVM_DATA_DIR (default ./var) selects the database; CVM_CONFIG_FILE and the other CVM_* settings as for cvmd.");

  const tenant = group("tenant", "tenants");
  tenant
    .command("create")
    .description("create a tenant and print its first API key")
    .argument("<SLUG>")
    .option(...JSON_FLAG)
    .action(async (slug, o) => done(await tenantCreate(ctx, slug, o)));
  tenant
    .command("list")
    .description("list tenants")
    .option(...JSON_FLAG)
    .action(async (o) => done(await tenantList(ctx, o)));
  tenant
    .command("suspend")
    .description("block a tenant's API access (its instances keep running)")
    .argument("<SLUG>")
    .action(async (slug) => done(await tenantSuspend(ctx, slug, true)));
  tenant
    .command("resume")
    .description("unblock a suspended tenant's API access")
    .argument("<SLUG>")
    .action(async (slug) => done(await tenantSuspend(ctx, slug, false)));

  const key = group("key", "API keys");
  key
    .command("create")
    .description("create another API key for a tenant (printed once)")
    .argument("<SLUG>")
    .option(...JSON_FLAG)
    .action(async (slug, o) => done(await keyCreate(ctx, slug, o)));
  key
    .command("list")
    .description("list a tenant's keys (prefixes only, never secrets)")
    .argument("<SLUG>")
    .option(...JSON_FLAG)
    .action(async (slug, o) => done(await keyList(ctx, slug, o)));
  key
    .command("revoke")
    .description("revoke a key at once")
    .argument("<PREFIX>")
    .action(async (prefix) => done(await keyRevoke(ctx, prefix)));
  key
    .command("rotate")
    .description("new key for the same tenant (printed once); the old one stays valid for the grace period")
    .argument("<PREFIX>")
    .option("--grace <D>", "how long the old key stays valid: 30s, 15m, 24h, 7d, 1h30m (default 24h; 0s = now)")
    .option(...JSON_FLAG)
    .action(async (prefix, o) => done(await keyRotate(ctx, prefix, o)));

  program
    .command("instances")
    .description("list instances (all tenants by default)")
    .option("--tenant <SLUG>", "only this tenant's")
    .option(...JSON_FLAG)
    .action(async (o) => done(await instancesList(ctx, o)));

  const instance = group("instance", "operator actions on instances");
  instance
    .command("delete")
    .description("delete an instance, as DELETE /v1/instances/NAME does")
    .requiredOption("--tenant <SLUG>", "the instance's tenant")
    .argument("<NAME>")
    .option(...JSON_FLAG)
    .action(async (name, o) => done(await instanceDelete(ctx, name, o)));
  instance
    .command("cleanup")
    .description("delete failed instances whose failure is older than D (default 0s)")
    .requiredOption("--failed", "failed instances (the only kind cleanup deletes; required so the command says what it deletes)")
    .option("--older-than <D>", "only failures older than D: 30s, 15m, 24h, 7d")
    .option(...JSON_FLAG)
    .action(async (o) => done(await instanceCleanup(ctx, o)));

  program
    .command("backup")
    .description("consistent copy of the database, safe while cvmd runs")
    .argument("<FILE>")
    .action(async (file) => done(await backup(ctx, file)));
  program
    .command("restore")
    .description("replace the database with a backup (cvmd must be stopped)")
    .argument("<FILE>")
    .action(async (file) => done(await restore(ctx, file)));

  const image = group("image", "guest images");
  image
    .command("list")
    .description("guest images beside CVM_IMAGE_DIR; * marks the one new instances use")
    .option(...JSON_FLAG)
    .action(async (o) => done(await imageList(ctx, o)));
  image
    .command("add")
    .description("verify an image directory against its manifest and copy it in")
    .argument("<DIR>")
    .option("--use", "boot new instances from it too")
    .action(async (dir, o) => done(await imageAdd(ctx, dir, o)));
  image
    .command("use")
    .description("boot new instances from image ID")
    .argument("<ID>")
    .action(async (id) => done(await imageUse(ctx, id)));
  image
    .command("rm")
    .description("remove an image no live instance and no default uses")
    .argument("<ID>")
    .action(async (id) => done(await imageRm(ctx, id)));

  program
    .command("console")
    .description("attach to an instance's serial console (Ctrl-] detaches)")
    .argument("<NAME>")
    .option("--tenant <SLUG>", "the instance's tenant, when several tenants have an instance NAME")
    .option("--log", "print the serial log instead of attaching")
    .option("--raw", "show guest control bytes as they are (escaped by default)")
    .action(async (name, o) => done(await consoleAttach(ctx, name, o)));

  const pool = program
    .command("pool")
    .description("the warm pool per image: size, warm, booting, claimed; host capacity")
    .option(...JSON_FLAG)
    .action(async (o) => done(await poolStatus(ctx, o)));
  pool
    .command("resize")
    .description("keep N warm guests of image ID; live when cvmd runs")
    .argument("<N>")
    .option("--image <ID>", "the image (default: the current one)")
    .action(async (n, o) => done(await poolResize(ctx, n, o)));

  const netns = program
    .command("netns")
    .description("who owns the guest network namespace (CVM_NETNS) and what runs in it")
    .action(async () => done(await netnsStatus(ctx)));
  netns
    .command("takeover")
    .description("hand CVM_NETNS over to this data dir (its previous owner's cvmd and guests must be stopped); cvmd rebuilds the guest network when it starts")
    .action(async () => done(await netnsTakeover(ctx)));

  program
    .command("help")
    .description("this list, or one command's usage and options")
    .argument("[COMMAND...]")
    .action((path) => {
      let target: CommandUnknownOpts = program;
      for (const name of path) {
        const next = target.commands.find((c) => c.name() === name);
        if (!next) throw new UsageError(`no command '${[...commandPath(target), name].join(" ")}'; see 'cvmctl help'`);
        target = next;
      }
      target.outputHelp();
      done(0);
    });

  return { program, groups };
}

/** The words after `cvmctl` that name a command. */
function commandPath(cmd: CommandUnknownOpts): string[] {
  return cmd.parent ? [...commandPath(cmd.parent), cmd.name()] : [];
}

function allCommands(cmd: CommandUnknownOpts): CommandUnknownOpts[] {
  return cmd.commands.flatMap((c) => [c, ...allCommands(c)]);
}

/** `instance delete --tenant SLUG NAME [--json]`: required options, arguments, then the optional ones, as the README writes them. */
function synopsis(cmd: CommandUnknownOpts): string {
  const flag = (o: CommandUnknownOpts["options"][number]) => {
    const value = /<([^>]+)>/.exec(o.flags)?.[1];
    return value ? `${o.long} ${value}` : o.long!;
  };
  const options = cmd.options.filter((o) => o.long !== "--help");
  const args = cmd.registeredArguments.map((a) => (a.required ? a.name() : `[${a.name()}${a.variadic ? "..." : ""}]`));
  return [...options.filter((o) => o.mandatory).map(flag), ...args, ...options.filter((o) => !o.mandatory).map((o) => `[${flag(o)}]`)].join(" ");
}

/**
 * Help lists every runnable command under the one asked about, with its full synopsis, so
 * `cvmctl --help` is the whole reference on one screen rather than a list of groups to open one by one.
 */
function helpLayout(groups: Set<CommandUnknownOpts>): Partial<Help> {
  return {
    visibleCommands: (cmd) => allCommands(cmd).filter((c) => !groups.has(c)),
    subcommandTerm: (cmd) => [...commandPath(cmd), synopsis(cmd)].filter((s) => s !== "").join(" "),
  };
}

/** One line naming the command and, for a flag it does not take, the commands that do. */
function describeParseError(program: CommandUnknownOpts, cmd: CommandUnknownOpts, err: CommanderError): string {
  const where = ["cvmctl", ...commandPath(cmd)].join(" ");
  let message = err.message.replace(/^error: /, "").replace(/\s*\n\s*/g, " ").replace(/\.$/, "");
  if (err.code === "commander.unknownOption") {
    // commander reports the flag only inside its message; program.test.ts pins that wording.
    const flag = /'([^']+)'/.exec(err.message)?.[1]?.split("=")[0];
    const owners = allCommands(program)
      .filter((c) => c !== cmd && c.options.some((o) => o.long === flag || o.short === flag))
      .map((c) => `'${commandPath(c).join(" ")}'`);
    if (owners.length > 0) message += ` (an option of ${owners.join(", ")})`;
  }
  return `${where}: ${message}; see '${["cvmctl help", ...commandPath(cmd)].join(" ")}'`;
}

/** Raised from commander's exit hook so the command it happened in travels with the error. */
class ParseStop extends Error {
  constructor(
    readonly command: CommandUnknownOpts,
    readonly error: CommanderError,
  ) {
    super(error.message);
  }
}

/**
 * Runs one cvmctl invocation and returns its exit status: 0 done, 1 refused or failed, 2 usage,
 * 78 configuration. Output goes through `io` only; exiting is the caller's business (main.ts flushes
 * pipes first).
 */
export async function run(argv: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  let code = 0;
  const { program, groups } = commandTree(cliContext(env, io), (c) => (code = c));
  const layout = helpLayout(groups);
  const text = (write: (line: string) => void) => (s: string) => write(s.replace(/\n$/, ""));
  // On each command, not once on the program: commander copies these settings only into commands
  // created after them, and each exit hook must know its own command to name it.
  for (const cmd of [program, ...allCommands(program)]) {
    cmd
      // commander's own error text (two lines with a suggestion) is replaced by describeParseError's one.
      .configureOutput({ writeOut: text(io.out), writeErr: text(io.err), outputError: () => {} })
      .configureHelp(layout)
      .exitOverride((err) => {
        throw new ParseStop(cmd, err);
      });
    cmd.usage(groups.has(cmd) || cmd === program ? "COMMAND" : synopsis(cmd));
  }
  if (argv.length === 0) {
    program.outputHelp();
    return 2;
  }
  try {
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (err) {
    if (err instanceof ParseStop) {
      // Help asked for (0), or help already shown on stderr for a group named without its command.
      if (err.error.exitCode === 0) return 0;
      if (err.error.code !== "commander.help") io.err(describeParseError(program, err.command, err.error));
      return 2;
    }
    // Everything a command refuses or fails at ends as one line; none of it needs a stack.
    if (err instanceof Error) {
      io.err(`cvmctl: ${err.message}`);
      return err instanceof CliError ? err.exitCode : 1;
    }
    throw err;
  }
}
