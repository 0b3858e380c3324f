//! A checked history as one self-contained HTML page (inline CSS and
//! JavaScript, no network; opens from disk), after Porcupine's visualizer:
//! per key, one row per client, each call a bar from its call to its
//! return (a call that never returned drawn open to the right), its
//! arguments and result on hover. For an illegal key, the calls of the
//! longest linearizable prefix the search found are numbered in their
//! order, the call it could not place next is red with the value before it,
//! and the minimal offending set is outlined and listed in a table.
//!
//! Pure: [`render`] returns the page; the caller writes it. Every string
//! from the history (keys and values are arbitrary text) reaches the page
//! only as JSON inside a `<script type="application/json">` block with
//! `<`, `>` and `&` escaped, and the script puts it in the document as text
//! (`textContent`), never as markup: a value cannot inject anything.
//!
//! Large histories: the page embeds every call, and draws one key at a
//! time, on demand; a key with more than [`DRAW_OPS_MAX`] calls is listed
//! but not drawn.

use super::{Explanation, History, Verdict};
use serde_json::json;

/// The most calls of one key the page draws (an SVG of more becomes too
/// slow to scroll and too dense to read).
pub const DRAW_OPS_MAX: usize = 2_000;

/// The page for `history`, checked with `verdict`; `explanation` (from
/// [`super::explain`]) adds the longest linearizable prefix of the illegal
/// key. `title` heads the page (e.g. the history file's name).
pub fn render(title: &str, history: &History, verdict: &Verdict, explanation: Option<&Explanation>) -> String {
    let ops: Vec<_> =
        history.ops.iter().map(|o| json!([o.client, o.kind, o.key, o.value, o.output, o.call, o.ret])).collect();
    let (status, key, core) = match verdict {
        Verdict::Ok => ("linearizable", None, Vec::new()),
        Verdict::Unknown { key } => ("unknown: the search budget ran out", Some(key.clone()), Vec::new()),
        Verdict::Illegal(v) => ("NOT linearizable", Some(v.key.clone()), positions_of(history, &v.ops)),
    };
    let data = json!({
        "title": title,
        "status": status,
        "key": key,
        "ops": ops,
        "core": core,
        "prefix": explanation.map(|e| &e.prefix),
        "blocked": explanation.and_then(|e| e.blocked),
        "complete": explanation.is_none_or(|e| e.complete),
        "drawMax": DRAW_OPS_MAX,
    });
    let data = script_safe(&data.to_string());
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width\">\n<title>raftkv history</title>\n\
         <style>{STYLE}</style></head>\n<body>\n{BODY}\n\
         <script type=\"application/json\" id=\"history\">{data}</script>\n<script>{SCRIPT}</script>\n</body></html>\n"
    )
}

/// Positions in `history.ops` of `ops` (each matched once, first match).
fn positions_of(history: &History, ops: &[super::Operation]) -> Vec<usize> {
    let mut used = vec![false; history.ops.len()];
    ops.iter()
        .filter_map(|op| {
            let at = (0..history.ops.len()).find(|&i| !used[i] && history.ops[i] == *op)?;
            used[at] = true;
            Some(at)
        })
        .collect()
}

/// JSON that can sit inside a `<script>` element: no `</script>`, no
/// `<!--`, nothing an HTML parser reads as markup.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c").replace('>', "\\u003e").replace('&', "\\u0026")
}

const STYLE: &str = r#"
body { font: 14px system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.bad { color: #b00020; } .good { color: #1b7f3b; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; font-family: monospace; }
#keys button { margin: 2px; font-family: monospace; }
#keys button.illegal { border: 2px solid #b00020; }
#keys button.shown { background: #def; }
#timeline { overflow-x: auto; border: 1px solid #ddd; margin-top: .5em; }
svg text { font: 11px monospace; pointer-events: none; }
.note { color: #555; }
"#;

const BODY: &str = r#"<h1 id="title"></h1>
<p>Verdict: <b id="status"></b></p>
<div id="explanation"></div>
<h2>Keys</h2>
<p class="note">One row per client; each bar is a call (P put, A append, G get, D delete, N put-if-absent; → what it returned), from when it was sent to when its answer arrived
(open-ended: never answered). Time is drawn by order of events, not to scale. Hover over a bar for its details.
Green bars are numbered in the order of the longest linearizable prefix found; the red bar is the call that
could not be placed after them; outlined bars are the minimal offending set.</p>
<div id="keys"></div>
<div id="caption" class="note"></div>
<div id="timeline"></div>"#;

const SCRIPT: &str = r##"
"use strict";
const data = JSON.parse(document.getElementById("history").textContent);
const ops = data.ops.map((o, i) => ({ i, client: o[0], kind: o[1], key: o[2], value: o[3], output: o[4], call: o[5], ret: o[6] }));
const core = new Set(data.core);
const order = new Map((data.prefix || []).map((p, n) => [p[0], { n: n + 1, after: p[1] }]));
const text = (tag, s, cls) => { const e = document.createElement(tag); e.textContent = s; if (cls) e.className = cls; return e; };
const show = s => JSON.stringify(s);
const SHORT = { put: "P", append: "A", get: "G", delete: "D", put_if_absent: "N" };
function describe(o) {
  const writes = !(o.kind === "get" || o.kind === "delete");
  const args = writes ? show(o.key) + ", " + show(o.value) : show(o.key);
  const answered = o.ret !== null, returns = o.kind !== "put" && o.kind !== "append";
  const result = !answered ? "never answered" : returns ? show(o.output) : "ok";
  // On the bar the key goes without saying: "A x1", "G → x1x2".
  const label = SHORT[o.kind] + (writes ? " " + o.value : "") + (answered && returns ? " → " + (o.output === "" ? '""' : o.output) : "");
  return { op: o.kind + "(" + args + ")", result, label };
}
document.getElementById("title").textContent = "raftkv history: " + data.title;
const status = document.getElementById("status");
status.textContent = data.status + (data.key !== null ? " (key " + show(data.key) + ")" : "") + ", " + ops.length + " calls";
status.className = data.status === "linearizable" ? "good" : "bad";

const explanation = document.getElementById("explanation");
if (data.core.length) {
  explanation.append(text("h2", "Minimal offending set"));
  explanation.append(text("p", "These calls alone are not linearizable, and dropping any one of them makes them so (or leaves a read of a value no remaining call wrote).", "note"));
  const table = document.createElement("table");
  const head = document.createElement("tr");
  for (const h of ["#", "client", "operation", "result", "invoked", "returned"]) head.append(text("th", h));
  table.append(head);
  for (const i of data.core) {
    const o = ops[i], d = describe(o), row = document.createElement("tr");
    for (const cell of [i, o.client, d.op, d.result, o.call, o.ret === null ? "-" : o.ret]) row.append(text("td", String(cell)));
    table.append(row);
  }
  explanation.append(table);
}
if (data.prefix) {
  let line = "The search linearized " + data.prefix.length + " call(s) of this key" + (data.complete ? "" : " before its budget ran out");
  if (data.blocked !== null) {
    const d = describe(ops[data.blocked]);
    const before = data.prefix.length ? data.prefix[data.prefix.length - 1][1] : "";
    line += "; it could not place " + d.op + " → " + d.result + " (call #" + data.blocked + ") after them, the value then being " + show(before) + ".";
  } else line += ".";
  explanation.append(text("p", line));
}

const byKey = new Map();
for (const o of ops) { if (!byKey.has(o.key)) byKey.set(o.key, []); byKey.get(o.key).push(o); }
const keys = [...byKey.keys()].sort((a, b) => (b === data.key) - (a === data.key) || (a < b ? -1 : a > b ? 1 : 0));
const keyBox = document.getElementById("keys");
const buttons = new Map();
for (const k of keys) {
  const b = text("button", show(k) + " (" + byKey.get(k).length + ")");
  if (k === data.key) b.className = "illegal";
  b.onclick = () => draw(k);
  buttons.set(k, b);
  keyBox.append(b);
}

const SVG = "http://www.w3.org/2000/svg";
function el(tag, attrs, parent) {
  const e = document.createElementNS(SVG, tag);
  for (const [a, v] of Object.entries(attrs)) e.setAttribute(a, v);
  if (parent) parent.append(e);
  return e;
}
function draw(key) {
  for (const [k, b] of buttons) b.classList.toggle("shown", k === key);
  const list = byKey.get(key), box = document.getElementById("timeline"), caption = document.getElementById("caption");
  box.replaceChildren();
  if (list.length > data.drawMax) {
    caption.textContent = "Key " + show(key) + " has " + list.length + " calls; the page draws at most " + data.drawMax + ".";
    return;
  }
  caption.textContent = "Key " + show(key) + ": " + list.length + " calls.";
  const times = [...new Set(list.flatMap(o => o.ret === null ? [o.call] : [o.call, o.ret]))].sort((a, b) => a - b);
  const rank = new Map(times.map((t, n) => [t, n]));
  const clients = [...new Set(list.map(o => o.client))].sort((a, b) => a - b);
  const row = new Map(clients.map((c, n) => [c, n]));
  const STEP = 28, ROW = 30, LEFT = 90, width = LEFT + (times.length + 2) * STEP, height = 20 + clients.length * ROW;
  const svg = el("svg", { width, height, viewBox: "0 0 " + width + " " + height });
  for (const c of clients) {
    const t = el("text", { x: 4, y: 20 + row.get(c) * ROW + 16 }, svg);
    t.textContent = "client " + c;
  }
  for (const o of list) {
    const x0 = LEFT + rank.get(o.call) * STEP, y = 20 + row.get(o.client) * ROW;
    const x1 = o.ret === null ? width - 4 : LEFT + rank.get(o.ret) * STEP + STEP * 0.8;
    const step = order.get(o.i);
    const fill = o.i === data.blocked ? "#f4a3a8" : step ? "#b9e4c4" : "#cfd8e8";
    const rect = el("rect", { x: x0, y, width: Math.max(x1 - x0, 4), height: ROW - 8, rx: 3, fill,
      stroke: core.has(o.i) ? "#000" : "#7a8aa6", "stroke-width": core.has(o.i) ? 2.5 : 1 }, svg);
    if (o.ret === null) rect.setAttribute("stroke-dasharray", "4 3");
    const d = describe(o);
    const hover = el("title", {}, rect);
    hover.textContent = "#" + o.i + " client " + o.client + ": " + d.op + " → " + d.result + "\ninvoked " + o.call +
      ", returned " + (o.ret === null ? "never" : o.ret) + (step ? "\nlinearized " + step.n + "th; value after: " + show(step.after) : "");
    const label = el("text", { x: x0 + 3, y: y + 15 }, svg);
    const room = Math.max(2, Math.floor((x1 - x0 - 6) / 7));
    const full = (step ? step.n + ": " : "") + d.label;
    label.textContent = full.length > room ? full.slice(0, room - 1) + "…" : full;
  }
  box.append(svg);
}
if (keys.length) draw(keys[0]);
"##;

#[cfg(test)]
mod tests {
    use super::super::{check, explain, Budget, Operation};
    use super::*;

    #[test]
    fn an_illegal_history_is_drawn_with_its_explanation_and_nothing_escapes() {
        let evil = "</script><script>alert(1)</script><!--&";
        let history = History::new(vec![
            Operation::put(1, "k", "1", 0, Some(1)),
            Operation::get(2, "k", "", 2, Some(3)),
            Operation::put(3, evil, evil, 0, None),
        ]);
        let verdict = check(&history, Budget::default());
        assert!(verdict.is_illegal());
        let explanation = explain(&history, "k", Budget::default());
        assert_eq!(explanation.prefix, [(0, "1".to_owned())]);
        assert_eq!(explanation.blocked, Some(1), "the stale Get cannot follow the Put");
        let page = render("test", &history, &verdict, Some(&explanation));
        assert!(!page.contains(evil) && !page.contains("<script>alert"), "a value reached the page as markup");
        assert_eq!(page.matches("</script>").count(), 2, "only the page's own scripts end");
        let json_start = page.find("id=\"history\">").unwrap() + "id=\"history\">".len();
        let json_end = json_start + page[json_start..].find("</script>").unwrap();
        let data: serde_json::Value = serde_json::from_str(&page[json_start..json_end]).unwrap();
        assert_eq!(data["ops"][2][3], evil, "the value itself survives, as data");
        assert_eq!(data["core"], json!([0, 1]));
        assert_eq!(data["blocked"], json!(1));
    }
}
