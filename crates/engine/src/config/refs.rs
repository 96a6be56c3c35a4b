//! Static checks that conditions and templates only reference event fields that exist.

use super::FieldKind;
use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use std::collections::{BTreeMap, BTreeSet};

/// Top-level keys of `Event::to_template_value()`.
pub const EVENT_KEYS: &[&str] = &[
    "id",
    "source",
    "system",
    "entity",
    "entity_id",
    "change",
    "idempotency_key",
    "source_time",
    "source_time_hk",
    "received_at",
    "received_at_hk",
    "fields",
    "data",
];

/// Why a reference is wrong, as a sentence fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRef {
    pub path: String,
    pub reason: String,
}

/// Check one `event.a.b...` path (segments after `event`) against the known shape.
pub fn check_event_path(segs: &[String], fields: &BTreeMap<String, FieldKind>) -> Result<(), BadRef> {
    let path = std::iter::once("event").chain(segs.iter().map(String::as_str)).collect::<Vec<_>>().join(".");
    let Some(first) = segs.first() else {
        return Ok(());
    };
    if !EVENT_KEYS.contains(&first.as_str()) {
        return Err(BadRef {
            path,
            reason: format!("events have no key `{first}`; known keys: {}", EVENT_KEYS.join(", ")),
        });
    }
    match first.as_str() {
        "data" => Ok(()),
        "fields" => {
            let Some(name) = segs.get(1) else {
                return Ok(());
            };
            let Some(kind) = fields.get(name) else {
                let known = if fields.is_empty() {
                    "the source declares no typed fields".to_string()
                } else {
                    format!("declared fields: {}", fields.keys().cloned().collect::<Vec<_>>().join(", "))
                };
                return Err(BadRef {
                    path,
                    reason: format!("field `{name}` is not declared by the flow's source; {known}"),
                });
            };
            let Some(sub) = segs.get(2) else {
                return Ok(());
            };
            let allowed: &[&str] = match kind {
                FieldKind::Money => &["amount", "currency"],
                FieldKind::Quantity => &["value", "unit"],
                _ => &[],
            };
            if !allowed.contains(&sub.as_str()) || segs.len() > 3 {
                let reason = if allowed.is_empty() {
                    format!("field `{name}` is a {} value and has no sub-keys", kind.as_str())
                } else {
                    format!("a {} field has only {}", kind.as_str(), allowed.join(" and "))
                };
                return Err(BadRef { path, reason });
            }
            Ok(())
        }
        other if segs.len() > 1 => {
            Err(BadRef { path, reason: format!("`event.{other}` is a plain value and has no sub-keys") })
        }
        _ => Ok(()),
    }
}

/// Identifiers CEL resolves without a variable (type names).
const CEL_TYPE_IDENTS: &[&str] =
    &["int", "uint", "double", "bool", "string", "bytes", "list", "map", "null_type", "type", "timestamp", "duration"];

/// Walk a CEL AST: every reference under `event` is checked; any other free variable is an error.
pub fn check_cel(expr: &IdedExpr, fields: &BTreeMap<String, FieldKind>) -> Vec<BadRef> {
    let mut out = Vec::new();
    let mut bound = Vec::new();
    walk(expr, fields, &mut bound, &mut out);
    out
}

/// The `ident.a["b"].c` chain an expression spells: root identifier and segments.
fn chain(expr: &IdedExpr) -> Option<(String, Vec<String>)> {
    match &expr.expr {
        Expr::Ident(name) => Some((name.clone(), Vec::new())),
        Expr::Select(sel) if !sel.test => {
            let (root, mut segs) = chain(&sel.operand)?;
            segs.push(sel.field.clone());
            Some((root, segs))
        }
        Expr::Call(call) if call.func_name == "_[_]" && call.target.is_none() && call.args.len() == 2 => {
            let (root, mut segs) = chain(&call.args[0])?;
            match &call.args[1].expr {
                Expr::Literal(LiteralValue::String(s)) => {
                    segs.push(s.inner().to_string());
                    Some((root, segs))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

fn walk(expr: &IdedExpr, fields: &BTreeMap<String, FieldKind>, bound: &mut Vec<String>, out: &mut Vec<BadRef>) {
    if let Some((root, segs)) = chain(expr) {
        if !bound.contains(&root) {
            if root == "event" {
                if let Err(e) = check_event_path(&segs, fields) {
                    out.push(e);
                }
            } else if !CEL_TYPE_IDENTS.contains(&root.as_str()) {
                out.push(BadRef {
                    path: root.clone(),
                    reason: format!("unknown variable `{root}`; conditions can use `event` only"),
                });
            }
        }
        return;
    }
    match &expr.expr {
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        Expr::Select(sel) => {
            if sel.test {
                // `has(event.fields.x)`: the tested key must exist in the schema too.
                if let Some((root, mut segs)) = chain(&sel.operand) {
                    if root == "event" && !bound.contains(&root) {
                        segs.push(sel.field.clone());
                        if let Err(e) = check_event_path(&segs, fields) {
                            out.push(e);
                        }
                        return;
                    }
                }
            }
            walk(&sel.operand, fields, bound, out);
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                walk(t, fields, bound, out);
            }
            for a in &call.args {
                walk(a, fields, bound, out);
            }
        }
        Expr::List(list) => {
            for e in &list.elements {
                walk(e, fields, bound, out);
            }
        }
        Expr::Map(map) => walk_entries(&map.entries, fields, bound, out),
        Expr::Struct(st) => walk_entries(&st.entries, fields, bound, out),
        Expr::Comprehension(c) => {
            walk(&c.iter_range, fields, bound, out);
            walk(&c.accu_init, fields, bound, out);
            let before = bound.len();
            bound.push(c.iter_var.clone());
            if let Some(v2) = &c.iter_var2 {
                bound.push(v2.clone());
            }
            bound.push(c.accu_var.clone());
            walk(&c.loop_cond, fields, bound, out);
            walk(&c.loop_step, fields, bound, out);
            walk(&c.result, fields, bound, out);
            bound.truncate(before);
        }
    }
}

fn walk_entries(
    entries: &[cel::common::ast::IdedEntryExpr],
    fields: &BTreeMap<String, FieldKind>,
    bound: &mut Vec<String>,
    out: &mut Vec<BadRef>,
) {
    for entry in entries {
        match &entry.expr {
            EntryExpr::MapEntry(m) => {
                walk(&m.key, fields, bound, out);
                walk(&m.value, fields, bound, out);
            }
            EntryExpr::StructField(f) => walk(&f.value, fields, bound, out),
        }
    }
}

/// minijinja globals that are not variables.
const JINJA_GLOBALS: &[&str] = &["range", "dict", "namespace", "debug", "lipsum", "cycler", "joiner", "loop", "self"];

/// Check the nested undeclared variables of a template (`event.fields.amount`, ...).
pub fn check_template_vars(vars: &BTreeSet<String>, fields: &BTreeMap<String, FieldKind>) -> Vec<BadRef> {
    let mut out = Vec::new();
    for v in vars {
        let mut parts = v.split('.');
        let root = parts.next().unwrap_or_default();
        if root == "event" {
            let segs: Vec<String> = parts.map(str::to_string).collect();
            if let Err(e) = check_event_path(&segs, fields) {
                out.push(e);
            }
        } else if !JINJA_GLOBALS.contains(&root) {
            out.push(BadRef {
                path: v.clone(),
                reason: format!("unknown variable `{root}`; templates can use `event` only"),
            });
        }
    }
    // `event.fields.amount.currency` also yields its prefixes; keep only the deepest bad path per prefix.
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let mut kept: Vec<BadRef> = Vec::new();
    for e in out {
        if let Some(last) = kept.last() {
            if e.path.starts_with(&format!("{}.", last.path)) {
                continue;
            }
        }
        kept.push(e);
    }
    kept
}
