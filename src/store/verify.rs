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
        if !self.damage.is_empty() && self.damage.iter().all(|d| d.problem == UNFOUND) {
            lines.push(
                "every record is whole, only index pages are damaged: `kvs compact` builds \
                 the index again from the records"
                    .to_owned(),
            );
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
}
