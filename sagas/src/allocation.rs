//! Where each line of an order ships from: a pure decision over current availability.
//!
//! Preference, in order: one warehouse for the whole order; otherwise as few warehouses as
//! possible; among equals, warehouses in the order's shipping region, then lower priority
//! number, then id. A line is split across warehouses only when no single one has enough.

use std::collections::BTreeMap;

/// A warehouse that could ship, with what it has available per SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub warehouse_id: String,
    pub region: String,
    pub priority: i32,
    pub available: BTreeMap<String, u64>,
}

/// One part of an allocation: `qty` of `sku` from `warehouse_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub sku: String,
    pub warehouse_id: String,
    pub qty: u64,
}

/// Not enough stock anywhere for this SKU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("insufficient stock for SKU {sku}: ordered {ordered}, available {available}")]
pub struct Shortfall {
    pub sku: String,
    pub ordered: u64,
    pub available: u64,
}

/// Allocates `lines` (sku, qty) over `candidates`.
pub fn allocate(
    lines: &[(String, u64)],
    candidates: &[Candidate],
    region: &str,
) -> Result<Vec<Part>, Shortfall> {
    // Merge duplicate SKUs defensively (orders forbid them, but the function stands alone).
    let mut wanted: BTreeMap<&str, u64> = BTreeMap::new();
    for (sku, qty) in lines {
        *wanted.entry(sku.as_str()).or_default() += qty;
    }
    for (sku, qty) in &wanted {
        let total: u64 = candidates
            .iter()
            .map(|c| c.available.get(*sku).copied().unwrap_or(0))
            .sum();
        if total < *qty {
            return Err(Shortfall {
                sku: sku.to_string(),
                ordered: *qty,
                available: total,
            });
        }
    }
    let preference = |c: &Candidate| (c.region != region, c.priority, c.warehouse_id.clone());
    let covers =
        |c: &Candidate, sku: &str, qty: u64| c.available.get(sku).copied().unwrap_or(0) >= qty;

    // One warehouse for everything, if any can.
    let mut whole: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| wanted.iter().all(|(s, q)| covers(c, s, *q)))
        .collect();
    whole.sort_by_key(|c| preference(c));
    if let Some(c) = whole.first() {
        return Ok(wanted
            .iter()
            .map(|(s, q)| Part {
                sku: s.to_string(),
                warehouse_id: c.warehouse_id.clone(),
                qty: *q,
            })
            .collect());
    }

    // Otherwise greedily: warehouses that fully cover the most lines first, so few are used.
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by_key(|c| {
        let full = wanted.iter().filter(|(s, q)| covers(c, s, **q)).count();
        (std::cmp::Reverse(full), preference(c))
    });
    let mut left: BTreeMap<&str, u64> = wanted.clone();
    let mut parts = Vec::new();
    // First pass: whole lines from single warehouses, in preference order.
    for c in &order {
        for (sku, qty) in left.iter_mut() {
            if *qty > 0 && covers(c, sku, *qty) {
                parts.push(Part {
                    sku: sku.to_string(),
                    warehouse_id: c.warehouse_id.clone(),
                    qty: *qty,
                });
                *qty = 0;
            }
        }
    }
    // Second pass: split what no single warehouse can ship, largest stock first.
    for (sku, qty) in left.iter_mut().filter(|(_, q)| **q > 0) {
        let mut by_stock: Vec<&Candidate> = candidates.iter().collect();
        by_stock.sort_by_key(|c| {
            (
                std::cmp::Reverse(c.available.get(*sku).copied().unwrap_or(0)),
                preference(c),
            )
        });
        for c in by_stock {
            let take = c.available.get(*sku).copied().unwrap_or(0).min(*qty);
            if take > 0 {
                parts.push(Part {
                    sku: sku.to_string(),
                    warehouse_id: c.warehouse_id.clone(),
                    qty: take,
                });
                *qty -= take;
            }
            if *qty == 0 {
                break;
            }
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wh(id: &str, region: &str, priority: i32, stock: &[(&str, u64)]) -> Candidate {
        Candidate {
            warehouse_id: id.into(),
            region: region.into(),
            priority,
            available: stock.iter().map(|(s, q)| (s.to_string(), *q)).collect(),
        }
    }

    #[test]
    fn one_warehouse_ships_the_whole_order_when_it_can() {
        let c = [
            wh("a", "us", 1, &[("X", 5)]),
            wh("b", "eu", 9, &[("X", 5), ("Y", 1)]),
        ];
        let parts = allocate(&[("X".into(), 2), ("Y".into(), 1)], &c, "us").unwrap();
        assert!(parts.iter().all(|p| p.warehouse_id == "b"));
    }

    #[test]
    fn the_shipping_region_wins_over_priority_among_equals() {
        let c = [wh("a", "us", 1, &[("X", 5)]), wh("b", "eu", 9, &[("X", 5)])];
        let parts = allocate(&[("X".into(), 2)], &c, "eu").unwrap();
        assert_eq!(parts[0].warehouse_id, "b");
        let parts = allocate(&[("X".into(), 2)], &c, "ap").unwrap();
        assert_eq!(parts[0].warehouse_id, "a", "then priority");
    }

    #[test]
    fn a_line_is_split_only_when_no_warehouse_has_enough() {
        let c = [wh("a", "eu", 1, &[("X", 3)]), wh("b", "eu", 2, &[("X", 4)])];
        let parts = allocate(&[("X".into(), 6)], &c, "eu").unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(|p| p.qty).sum::<u64>(), 6);
    }

    #[test]
    fn a_shortfall_names_the_sku() {
        let c = [wh("a", "eu", 1, &[("X", 3)])];
        let err = allocate(&[("X".into(), 4)], &c, "eu").unwrap_err();
        assert_eq!(
            err,
            Shortfall {
                sku: "X".into(),
                ordered: 4,
                available: 3
            }
        );
    }

    fn candidates() -> impl Strategy<Value = Vec<Candidate>> {
        prop::collection::vec(
            (prop::collection::vec(0u64..20, 4), 0i32..5, prop::bool::ANY),
            1..5,
        )
        .prop_map(|ws| {
            ws.into_iter()
                .enumerate()
                .map(|(i, (stock, priority, eu))| Candidate {
                    warehouse_id: format!("w{i}"),
                    region: if eu { "eu".into() } else { "us".into() },
                    priority,
                    available: stock
                        .into_iter()
                        .enumerate()
                        .map(|(s, q)| (format!("S{s}"), q))
                        .collect(),
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn never_more_than_available_and_never_less_than_ordered_when_stock_suffices(
            cands in candidates(),
            lines in prop::collection::btree_map(0usize..4, 1u64..25, 1..4),
        ) {
            let lines: Vec<(String, u64)> = lines.into_iter().map(|(s, q)| (format!("S{s}"), q)).collect();
            let total = |sku: &str| cands.iter().map(|c| c.available.get(sku).copied().unwrap_or(0)).sum::<u64>();
            let suffices = lines.iter().all(|(s, q)| total(s) >= *q);
            match allocate(&lines, &cands, "eu") {
                Ok(parts) => {
                    prop_assert!(suffices);
                    for c in &cands {
                        for (sku, have) in &c.available {
                            let taken: u64 = parts.iter().filter(|p| &p.sku == sku && p.warehouse_id == c.warehouse_id).map(|p| p.qty).sum();
                            prop_assert!(taken <= *have, "over-allocated {} at {}", sku, c.warehouse_id);
                        }
                    }
                    for (sku, qty) in &lines {
                        let got: u64 = parts.iter().filter(|p| &p.sku == sku).map(|p| p.qty).sum();
                        prop_assert_eq!(got, *qty);
                    }
                    prop_assert!(parts.iter().all(|p| p.qty > 0));
                }
                Err(short) => {
                    prop_assert!(!suffices);
                    prop_assert!(total(&short.sku) < short.ordered);
                }
            }
        }
    }
}
