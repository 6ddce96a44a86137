// Encodes every text of a cases file with Hugging Face tokenizers.js (an independent tokenizer.json
// implementation) and compares with the forge ids and round-trip decoding. See tokenizer_xcheck.sh.
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "fs";
const dir = process.argv[2];
const tj = JSON.parse(fs.readFileSync(dir + "/tokenizer.json", "utf8"));
const tc = JSON.parse(fs.readFileSync(dir + "/tokenizer_config.json", "utf8"));
const tok = new Tokenizer(tj, tc);
const cases = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));
let bad = 0;
for (const [text, ids] of cases) {
  const got = tok.encode(text, { add_special_tokens: false }).ids;
  const same = got.length === ids.length && got.every((v, i) => v === ids[i]);
  if (!same) { bad++; console.log("MISMATCH", JSON.stringify(text).slice(0, 80), "\n  py", ids.slice(0, 30).join(","), "\n  js", got.slice(0, 30).join(",")); }
  const dec = tok.decode(got, { skip_special_tokens: false });
  if (dec !== text) { console.log("DECODE DIFF", JSON.stringify(text).slice(0,60), JSON.stringify(dec).slice(0,60)); }
}
console.log(`${cases.length - bad}/${cases.length} identical`);
if (bad) process.exit(1);
