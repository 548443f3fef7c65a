//! The tables of docs/reference.md that are generated from the code (`make generate`): every
//! condition reason with its fix, and every change event. Each sits between `<!-- NAME:begin -->`
//! and `<!-- NAME:end -->` markers; the prose around them is written by hand.

use anyhow::{Context as _, bail};

use crate::controller::reasons::{ChangeReason, Reason};

fn reasons_table() -> String {
    let mut table = String::from("| reason | status | where | what it means / the fix |\n|---|---|---|---|\n");
    for reason in Reason::ALL {
        let (status, condition, meaning) = reason.doc();
        table.push_str(&format!("| `{reason}` | {status} | {condition} | {meaning} |\n"));
    }
    table
}

fn events_table() -> String {
    let mut table = String::from("| reason | meaning |\n|---|---|\n");
    for reason in ChangeReason::ALL {
        table.push_str(&format!("| `{reason}` | {} |\n", reason.doc()));
    }
    table
}

/// Replaces what stands between the markers of `name` in `doc` with `table`.
fn splice(doc: &str, name: &str, table: &str) -> anyhow::Result<String> {
    let (begin, end) = (format!("<!-- {name}:begin -->\n"), format!("<!-- {name}:end -->"));
    let start = doc.find(&begin).with_context(|| format!("no {begin:?} marker"))? + begin.len();
    let Some(stop) = doc[start..].find(&end).map(|i| start + i) else { bail!("no {end:?} marker") };
    Ok(format!("{}{table}{}", &doc[..start], &doc[stop..]))
}

/// `doc` with every generated table brought up to date.
pub fn update(doc: &str) -> anyhow::Result<String> {
    splice(&splice(doc, "reasons", &reasons_table())?, "events", &events_table())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_spliced_between_their_markers_only() {
        let doc = "intro\n<!-- reasons:begin -->\nSTALE ROWS\n<!-- reasons:end -->\nmiddle\n<!-- events:begin -->\n<!-- events:end -->\nend\n";
        let updated = update(doc).expect("markers");
        assert!(updated.starts_with("intro\n<!-- reasons:begin -->\n| reason |"));
        assert!(updated.contains("| `KeyNotFound` | False | KeyReady |"));
        assert!(updated.contains("<!-- reasons:end -->\nmiddle\n"));
        assert!(updated.contains("| `Revoked` |") && updated.ends_with("<!-- events:end -->\nend\n"));
        assert!(!updated.contains("STALE ROWS"));
        assert_eq!(update(&updated).expect("again"), updated, "idempotent");
        assert!(update("no markers").is_err());
    }
}
