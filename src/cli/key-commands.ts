/**
 * `ringstore cluster-key generate|show|add|use|drop --file F`: the cluster key file
 * (node/cluster-key-file.ts) made and edited, so that an operator never edits keys by hand. A node
 * re-reads its key file within 2 s of a change, so a rotation runs without a restart:
 * 1. `generate --file new.key`, then on every node `add --file NODE_KEY_FILE --from new.key`: every node
 *    accepts the new key too, and still connects with the old one;
 * 2. once every node shows the new key among its accepted ones (`/status` peerSecurity), on every node
 *    `use --file NODE_KEY_FILE --id NEW`: nodes connect with the new key (their connections made with the
 *    old one drain), and still accept the old one from nodes not switched yet;
 * 3. once every node connects with the new key, on every node `drop --file NODE_KEY_FILE --id OLD`.
 */
import { randomBytes } from "node:crypto";
import * as path from "node:path";
import { type ClusterKeyFile, newClusterKey, readKeyFile, writeKeyFile } from "../node/cluster-key-file.js";
import { ConfigError } from "../node/config.js";
import { NodeFileSystem } from "../storage/fs/node-file-system.js";
import { derivePeerKey } from "../transport/peer-keys.js";

const fs = new NodeFileSystem();

const idOf = (key: Uint8Array) => derivePeerKey(key).id;

function describe(k: ClusterKeyFile): string {
  return `current ${idOf(k.current)}${k.accept === undefined ? "" : `, also accepting ${idOf(k.accept)}`}`;
}

async function save(file: string, k: ClusterKeyFile): Promise<void> {
  await writeKeyFile(fs, file, path.dirname(path.resolve(file)), k);
  process.stdout.write(`${file}: ${describe(k)}\n`);
}

export async function keyGenerateCommand(f: { file: string }): Promise<void> {
  if (await fs.exists(f.file))
    throw new ConfigError(
      `${f.file} exists: a new key file is never written over an old one (a key lost is a cluster cut off)`,
    );
  await save(f.file, { current: newClusterKey((n) => randomBytes(n)), accept: undefined });
}

export async function keyShowCommand(f: { file: string }): Promise<void> {
  process.stdout.write(`${f.file}: ${describe(await readKeyFile(fs, f.file))}\n`);
}

export async function keyAddCommand(f: { file: string; from: string }): Promise<void> {
  const k = await readKeyFile(fs, f.file);
  const extra = (await readKeyFile(fs, f.from)).current;
  const id = idOf(extra);
  if (id === idOf(k.current) || (k.accept !== undefined && id === idOf(k.accept))) {
    process.stdout.write(`${f.file} already holds key ${id}: ${describe(k)}\n`);
    return;
  }
  if (k.accept !== undefined)
    throw new ConfigError(
      `${f.file} already accepts a second key (${idOf(k.accept)}): a node holds two keys at most; finish or undo that rotation first (cluster-key drop --id ${idOf(k.accept)})`,
    );
  await save(f.file, { current: k.current, accept: extra });
}

export async function keyUseCommand(f: { file: string; id: string }): Promise<void> {
  const k = await readKeyFile(fs, f.file);
  if (idOf(k.current) === f.id) {
    process.stdout.write(`${f.file} already connects with key ${f.id}: ${describe(k)}\n`);
    return;
  }
  if (k.accept === undefined || idOf(k.accept) !== f.id)
    throw new ConfigError(`${f.file} holds no key ${f.id} (${describe(k)}): add it first (cluster-key add)`);
  await save(f.file, { current: k.accept, accept: k.current });
}

export async function keyDropCommand(f: { file: string; id: string }): Promise<void> {
  const k = await readKeyFile(fs, f.file);
  if (idOf(k.current) === f.id)
    throw new ConfigError(
      `key ${f.id} is the one ${f.file} connects with: switch to the other first (cluster-key use), or the node is cut off`,
    );
  if (k.accept === undefined || idOf(k.accept) !== f.id) {
    process.stdout.write(`${f.file} does not hold key ${f.id}: ${describe(k)}\n`);
    return;
  }
  await save(f.file, { current: k.current, accept: undefined });
}
