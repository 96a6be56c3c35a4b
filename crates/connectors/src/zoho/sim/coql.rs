//! The COQL subset of the Zoho simulator (`POST /crm/{version}/coql`).

use super::{error, no_content, reply, ZohoSim, MODULES};
use axum::response::Response;
use serde_json::{json, Map, Value};

impl ZohoSim {
    /// A COQL subset: `select a, b from M [where X = 'v' and Y is not null …] [limit n [offset m]]`.
    pub(super) fn coql(&self, body: &Value) -> Response {
        let Some(query) = body.get("select_query").and_then(Value::as_str) else {
            return error(400, "REQUIRED_PARAM_MISSING", "select_query is missing", json!({"param": "select_query"}));
        };
        let lower = query.to_ascii_lowercase();
        let syntax = || error(400, "SYNTAX_ERROR", "error occured while parsing the query", json!({}));
        let (Some(sel), Some(from)) = (lower.find("select "), lower.find(" from ")) else { return syntax() };
        let columns: Vec<String> = query[sel + 7..from].split(',').map(|c| c.trim().to_owned()).collect();
        let rest = &query[from + 6..];
        let rest_lower = rest.to_ascii_lowercase();
        let end_of = |word: &str| rest_lower.find(word);
        let module_end =
            [" where ", " order by ", " limit "].iter().filter_map(|w| end_of(w)).min().unwrap_or(rest.len());
        let module = rest[..module_end].trim();
        if !MODULES.contains(&module) {
            return error(400, "INVALID_QUERY", "invalid module", json!({"module": module}));
        }
        let limit_at = end_of(" limit ");
        let where_clause = end_of(" where ").map(|w| {
            let stop =
                [end_of(" order by "), limit_at].into_iter().flatten().filter(|e| *e > w).min().unwrap_or(rest.len());
            rest[w + 7..stop].to_owned()
        });
        let (mut limit, mut offset) = (200usize, 0usize);
        if let Some(l) = limit_at {
            let words: Vec<&str> = rest[l + 7..].split_whitespace().collect();
            let Some(n) = words.first().and_then(|w| w.parse().ok()) else { return syntax() };
            limit = n;
            if words.get(1).is_some_and(|w| w.eq_ignore_ascii_case("offset")) {
                let Some(m) = words.get(2).and_then(|w| w.parse().ok()) else { return syntax() };
                offset = m;
            }
        }
        if limit > 2000 || offset + limit > 100_000 {
            return error(400, "LIMIT_EXCEEDED", "limit exceeded", json!({"by": "limit", "limit": 2000}));
        }
        let d = self.data();
        let rows = d.records.get(module).cloned().unwrap_or_default();
        let mut conditions = Vec::new();
        for cond in where_clause.iter().flat_map(|w| w.split(" and ").map(str::trim).filter(|c| !c.is_empty())) {
            let cond = cond.trim_matches(|c| c == '(' || c == ')');
            if let Some(field) = cond.strip_suffix(" is not null") {
                conditions.push((field.trim().to_owned(), None));
            } else if let Some((field, value)) = cond.split_once('=') {
                conditions.push((field.trim().to_owned(), Some(value.trim().trim_matches('\'').to_owned())));
            } else {
                return syntax();
            }
        }
        let matches = |r: &Value| {
            conditions.iter().all(|(f, v)| match v {
                None => r.get(f).is_some_and(|x| !x.is_null()),
                Some(v) => r.get(f).is_some_and(|x| {
                    x.as_str() == Some(v.as_str()) || serde_json::from_str::<Value>(v).is_ok_and(|p| p == *x)
                }),
            })
        };
        let hits: Vec<&Value> = rows.iter().filter(|r| matches(r)).collect();
        let page: Vec<Value> = hits
            .iter()
            .skip(offset)
            .take(limit)
            .map(|r| {
                let mut out = Map::new();
                out.insert("id".into(), r["id"].clone());
                for c in &columns {
                    let value = match c.split_once('.') {
                        // `Lookup.Field`: one hop into the looked-up record.
                        Some((lookup, field)) => {
                            let target = r[lookup]["id"].as_str().unwrap_or("");
                            d.records
                                .values()
                                .flatten()
                                .find(|x| x["id"] == target)
                                .map_or(Value::Null, |x| x[field].clone())
                        }
                        None => match r.get(c.as_str()) {
                            Some(Value::Object(o)) => json!({"id": o.get("id").cloned().unwrap_or(Value::Null)}),
                            Some(v) => v.clone(),
                            None => Value::Null,
                        },
                    };
                    out.insert(c.clone(), value);
                }
                Value::Object(out)
            })
            .collect();
        if page.is_empty() {
            return no_content();
        }
        let more = offset + page.len() < hits.len();
        reply(200, json!({"data": page, "info": {"count": page.len(), "more_records": more}}))
    }
}
