//! What a check of the whole store found (`kvs verify`, `POST /v1/verify`).

/// One damaged item: where (table, project, key or record) and what is
/// wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Damage {
    pub place: String,
    pub problem: String,
}

/// What a walk checked and what it found damaged.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Catalog and figures records (projects, tokens, digests, stats,
    /// histories).
    pub records: u64,
    pub keys: u64,
    /// Large values, kept apart from their key's record.
    pub values: u64,
    pub change_sets: u64,
    pub damage: Vec<Damage>,
}

/// The problem of a record that a walk over the leaves finds whole but a
/// lookup by its key does not: a damaged page of a B-tree's index.
pub const UNFOUND: &str = "a lookup by its key does not find it (a damaged index page)";

/// The problem of a key whose record has an expiry that the expiry index
/// has no entry for: the sweep finds keys only there, so it never removes
/// this one (a storage move of an older release dropped a project's
/// entries). `kvs compact` adds the entries too, named by the summary when
/// it mends all the damage (as for [`UNFOUND`]).
pub const UNINDEXED: &str = "its expiry has no entry in the expiry index, so the expiry sweep \
     never removes it (reads take it for gone once it expires, but it keeps its room and a \
     max_keys slot): writing the key again or deleting it mends it";

impl Report {
    /// Notes a damaged item.
    pub fn damaged(&mut self, place: impl Into<String>, problem: impl std::fmt::Display) {
        self.damage.push(Damage {
            place: place.into(),
            problem: problem.to_string(),
        });
    }

    /// One line per damaged item, then a summary.
    pub fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .damage
            .iter()
            .map(|d| format!("damaged: {}: {}", d.place, d.problem))
            .collect();
        lines.push(format!(
            "checked {} records, {} keys, {} large values, {} change sets: {}",
            self.records,
            self.keys,
            self.values,
            self.change_sets,
            match self.damage.len() {
                0 => "no damage".to_owned(),
                1 => "1 damaged item".to_owned(),
                n => format!("{n} damaged items"),
            }
        ));
        let only = |problem: &str| self.damage.iter().all(|d| d.problem == problem);
        let mended = |d: &Damage| d.problem == UNFOUND || d.problem == UNINDEXED;
        if !self.damage.is_empty() && self.damage.iter().all(mended) {
            let what = if only(UNFOUND) {
                "only index pages are damaged: `kvs compact` builds the index again"
            } else if only(UNINDEXED) {
                "only the expiry index lacks entries: `kvs compact` adds them"
            } else {
                "only index pages are damaged and the expiry index lacks entries: \
                 `kvs compact` builds both again"
            };
            lines.push(format!("every record is whole, {what} from the records"));
        }
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Damage to index pages alone is told apart, with its remedy.
    #[test]
    fn index_damage_alone_names_compact_as_the_remedy() {
        let mut report = Report::default();
        report.damaged("project p key \"a\"", UNFOUND);
        let lines = report.lines();
        assert!(lines.last().unwrap().contains("kvs compact"), "{lines:?}");
        report.damaged("project p key \"b\"", "value: failed its checksum");
        let lines = report.lines();
        assert!(
            !lines.iter().any(|l| l.contains("kvs compact")),
            "{lines:?}"
        );
        assert!(
            lines.last().unwrap().ends_with("2 damaged items"),
            "{lines:?}"
        );
    }

    /// Keys missing from the expiry index, alone or with damaged index
    /// pages, name `kvs compact` too: it builds both from the records.
    #[test]
    fn expiry_index_entries_missing_name_compact_as_the_remedy() {
        let mut report = Report::default();
        report.damaged("project p key \"a\"", UNINDEXED);
        let lines = report.lines();
        assert!(
            lines.last().unwrap().contains("kvs compact` adds"),
            "{lines:?}"
        );
        report.damaged("project p key \"b\"", UNFOUND);
        let lines = report.lines();
        assert!(lines.last().unwrap().contains("builds both"), "{lines:?}");
    }
}
