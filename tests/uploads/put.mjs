// PUTs a file N times with Node's fetch; prints a JSON list of the statuses
// (or error codes). Usage: node put.mjs URL TOKEN FILE N
import { readFileSync } from 'node:fs';

const [url, token, path, times] = process.argv.slice(2);
const data = readFileSync(path);
const headers = { Authorization: 'Bearer ' + token, 'Content-Type': 'text/plain' };
const outcomes = [];
for (let i = 0; i < Number(times); i++) {
  try {
    const answer = await fetch(url, { method: 'PUT', body: data, headers });
    await answer.text();
    outcomes.push(answer.status);
  } catch (error) {
    outcomes.push(String(error.cause?.code ?? error));
  }
}
console.log(JSON.stringify(outcomes));
