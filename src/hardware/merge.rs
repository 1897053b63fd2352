//! Merging step lists of several managers (spec hardware-and-disks.md 4.4): one
//! descriptor per step name, chosen by the key `(-support, -priority, manager name)`.
//! Pure, so the rule is tested apart from any manager.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use ira_hw::{Step, SupportLevel};

/// The steps one manager offered, with what deduplication needs to know about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The manager's class-like name (`HardwareManager::name`).
    pub manager: String,
    /// Its support level on this machine.
    pub support: SupportLevel,
    /// The descriptors it offered.
    pub steps: Vec<Step>,
}

/// Keeps one descriptor per step name: the highest support level wins, then the higher
/// priority, then the alphabetically first manager name; on a full tie the first one
/// offered. Returns `{manager: [winning descriptors]}`; managers that won nothing are
/// absent. Within a manager, steps keep the order in which their names first appeared.
pub fn deduplicate_steps(candidates: &[Candidate]) -> BTreeMap<String, Vec<Step>> {
    // Group (candidate, step) references by name, names in first-seen order.
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<(&Candidate, &Step)>> = HashMap::new();
    for candidate in candidates {
        for step in &candidate.steps {
            let group = groups.entry(step.step.as_str()).or_insert_with(|| {
                order.push(step.step.as_str());
                Vec::new()
            });
            group.push((candidate, step));
        }
    }

    let mut merged: BTreeMap<String, Vec<Step>> = BTreeMap::new();
    for name in order {
        let winner = groups.get(name).and_then(|group| {
            // `min_by_key` keeps the first of equal elements, which makes full ties stable.
            group.iter().min_by_key(|(candidate, step)| {
                (
                    Reverse(candidate.support),
                    Reverse(step.priority),
                    candidate.manager.as_str(),
                )
            })
        });
        if let Some((candidate, step)) = winner {
            merged
                .entry(candidate.manager.clone())
                .or_default()
                .push((*step).clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(manager: &str, support: u32, steps: &[(&str, i64)]) -> Candidate {
        Candidate {
            manager: manager.to_owned(),
            support: SupportLevel(support),
            steps: steps
                .iter()
                .map(|(name, prio)| Step::new(name, "deploy", *prio))
                .collect(),
        }
    }

    #[test]
    fn unique_names_are_all_kept_in_order() {
        let merged = deduplicate_steps(&[cand("A", 1, &[("x", 0), ("y", 5)])]);
        let names: Vec<_> = merged["A"].iter().map(|s| s.step.as_str()).collect();
        assert_eq!(names, ["x", "y"]);
    }

    #[test]
    fn manager_winning_nothing_is_absent() {
        let merged =
            deduplicate_steps(&[cand("Low", 1, &[("x", 50)]), cand("High", 2, &[("x", 1)])]);
        assert!(!merged.contains_key("Low"));
        assert_eq!(merged["High"][0].priority, 1);
    }

    #[test]
    fn full_tie_keeps_the_first_offered() {
        let mut first = cand("A", 1, &[("x", 3)]);
        first.steps[0].interface = "raid".to_owned();
        let merged = deduplicate_steps(&[first, cand("A", 1, &[("x", 3)])]);
        assert_eq!(merged["A"].len(), 1);
        assert_eq!(merged["A"][0].interface, "raid");
    }
}
