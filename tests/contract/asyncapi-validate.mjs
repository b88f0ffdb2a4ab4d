// Validates an AsyncAPI document with the official parser (@asyncapi/parser), resolving its
// relative $refs from disk. Prints every diagnostic; exits 1 if any has error severity (or the
// document does not parse at all), 0 otherwise.
// Schema ids under BASE_URL are read from the folder of FILE (the ids name the checked-in files);
// any other remote reference fails, so the check never needs the network.
// Usage: node asyncapi-validate.mjs FILE BASE_URL
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

const [file, base] = process.argv.slice(2);
if (!file || !base) {
  console.error('usage: node asyncapi-validate.mjs FILE BASE_URL');
  process.exit(2);
}
const folder = path.dirname(path.resolve(file));
const local = {
  schema: 'https',
  read: async (uri) => {
    const url = uri.toString();
    if (!url.startsWith(base + '/')) throw new Error(`not one of our schema ids: ${url}`);
    return readFile(path.join(folder, url.slice(base.length + 1)), 'utf8');
  },
};
const offline = { schema: 'http', read: async (uri) => { throw new Error(`no network: ${uri}`); } };
const parser = new Parser({ __unstable: { resolver: { resolvers: [local, offline] } } });
const { document, diagnostics } = await fromFile(parser, path.resolve(file)).parse();
const names = { 0: 'error', 1: 'warning', 2: 'information', 3: 'hint' };
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === DiagnosticSeverity.Error) errors++;
  console.log(`${names[d.severity] ?? d.severity}: ${d.code}: ${d.message} at /${(d.path ?? []).join('/')}`);
}
if (!document || errors > 0) {
  console.log(`${file}: ${errors} error(s); document ${document ? 'parsed' : 'did not parse'}`);
  process.exit(1);
}
const messages = document.allMessages().length;
console.log(`${file}: valid AsyncAPI ${document.version()}, ${document.channels().length} channels, ${messages} messages`);
