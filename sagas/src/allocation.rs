//! Where each line of an order ships from: a pure decision over current availability.
//!
//! Preference, in order: one warehouse for the whole order; otherwise as few warehouses as
//! possible; among equals, warehouses in the order's shipping region, then lower priority
//! number, then id. A line is split across warehouses only when no single one has enough.

use std::collections::BTreeMap;

use emporium_domain::{Allocation, Quantity, Region, Sku, StockLevels, WarehouseId};

/// A warehouse that could ship, with what it has available per SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub warehouse_id: WarehouseId,
    pub region: Region,
    pub priority: i32,
    pub available: BTreeMap<Sku, u64>,
}

impl Candidate {
    /// Counts `levels` of `sku` here, plus `own` units the order already holds (they are
    /// released before it reserves again).
    pub fn add(&mut self, sku: &Sku, levels: StockLevels, own: u64) {
        self.available.insert(sku.clone(), levels.available + own);
    }
}

/// Not enough stock anywhere for this SKU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("insufficient stock for SKU {sku}: ordered {ordered}, available {available}")]
pub struct Shortfall {
    pub sku: Sku,
    pub ordered: u64,
    pub available: u64,
}

/// One part before it becomes a domain [`Allocation`].
struct Part<'a> {
    sku: &'a Sku,
    warehouse_id: &'a WarehouseId,
    qty: u64,
}

/// Allocates `lines` (sku, qty) over `candidates`.
pub fn allocate(
    lines: &[(Sku, Quantity)],
    candidates: &[Candidate],
    region: &Region,
) -> Result<Vec<Allocation>, Shortfall> {
    // Merge duplicate SKUs defensively (orders forbid them, but the function stands alone).
    let mut wanted: BTreeMap<&Sku, u64> = BTreeMap::new();
    for (sku, qty) in lines {
        *wanted.entry(sku).or_default() += u64::from(qty.get());
    }
    for (sku, qty) in &wanted {
        let total: u64 = candidates
            .iter()
            .map(|c| c.available.get(*sku).copied().unwrap_or(0))
            .sum();
        if total < *qty {
            return Err(Shortfall {
                sku: (*sku).clone(),
                ordered: *qty,
                available: total,
            });
        }
    }
    let preference = |c: &Candidate| (&c.region != region, c.priority, c.warehouse_id.clone());
    let covers =
        |c: &Candidate, sku: &Sku, qty: u64| c.available.get(sku).copied().unwrap_or(0) >= qty;

    // One warehouse for everything, if any can.
    let mut whole: Vec<&Candidate> = candidates
        .iter()
        .filter(|c| wanted.iter().all(|(s, q)| covers(c, s, *q)))
        .collect();
    whole.sort_by_key(|c| preference(c));
    if let Some(c) = whole.first() {
        let parts = wanted
            .iter()
            .map(|(s, q)| Part {
                sku: s,
                warehouse_id: &c.warehouse_id,
                qty: *q,
            })
            .collect();
        return typed(parts);
    }

    // Otherwise greedily: warehouses that fully cover the most lines first, so few are used.
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by_key(|c| {
        let full = wanted.iter().filter(|(s, q)| covers(c, s, **q)).count();
        (std::cmp::Reverse(full), preference(c))
    });
    let mut left: BTreeMap<&Sku, u64> = wanted.clone();
    let mut parts = Vec::new();
    // First pass: whole lines from single warehouses, in preference order.
    for c in &order {
        for (sku, qty) in left.iter_mut() {
            if *qty > 0 && covers(c, sku, *qty) {
                parts.push(Part {
                    sku,
                    warehouse_id: &c.warehouse_id,
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
                    sku,
                    warehouse_id: &c.warehouse_id,
                    qty: take,
                });
                *qty -= take;
            }
            if *qty == 0 {
                break;
            }
        }
    }
    typed(parts)
}

/// The parts as domain allocations. A part's quantity never exceeds its line's, so the
/// conversion fails only for merged duplicate lines beyond a quantity's bound: a shortfall.
fn typed(parts: Vec<Part<'_>>) -> Result<Vec<Allocation>, Shortfall> {
    parts
        .into_iter()
        .map(|p| {
            Ok(Allocation {
                sku: p.sku.clone(),
                warehouse_id: p.warehouse_id.clone(),
                qty: Quantity::try_from(p.qty).map_err(|_| Shortfall {
                    sku: p.sku.clone(),
                    ordered: p.qty,
                    available: 0,
                })?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sku(s: &str) -> Sku {
        Sku::parse(s).unwrap()
    }
    fn wid(s: &str) -> WarehouseId {
        WarehouseId::parse(s).unwrap()
    }
    fn region(s: &str) -> Region {
        Region::parse(s).unwrap()
    }
    fn line(s: &str, q: u64) -> (Sku, Quantity) {
        (sku(s), Quantity::try_from(q).unwrap())
    }

    fn wh(id: &str, r: &str, priority: i32, stock: &[(&str, u64)]) -> Candidate {
        Candidate {
            warehouse_id: wid(id),
            region: region(r),
            priority,
            available: stock.iter().map(|(s, q)| (sku(s), *q)).collect(),
        }
    }

    #[test]
    fn one_warehouse_ships_the_whole_order_when_it_can() {
        let c = [
            wh("a", "us", 1, &[("X", 5)]),
            wh("b", "eu", 9, &[("X", 5), ("Y", 1)]),
        ];
        let parts = allocate(&[line("X", 2), line("Y", 1)], &c, &region("us")).unwrap();
        assert!(parts.iter().all(|p| p.warehouse_id == wid("b")));
    }

    #[test]
    fn the_shipping_region_wins_over_priority_among_equals() {
        let c = [wh("a", "us", 1, &[("X", 5)]), wh("b", "eu", 9, &[("X", 5)])];
        let parts = allocate(&[line("X", 2)], &c, &region("eu")).unwrap();
        assert_eq!(parts[0].warehouse_id, wid("b"));
        let parts = allocate(&[line("X", 2)], &c, &region("ap")).unwrap();
        assert_eq!(parts[0].warehouse_id, wid("a"), "then priority");
    }

    #[test]
    fn a_line_is_split_only_when_no_warehouse_has_enough() {
        let c = [wh("a", "eu", 1, &[("X", 3)]), wh("b", "eu", 2, &[("X", 4)])];
        let parts = allocate(&[line("X", 6)], &c, &region("eu")).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts.iter().map(|p| u64::from(p.qty.get())).sum::<u64>(), 6);
    }

    #[test]
    fn a_shortfall_names_the_sku() {
        let c = [wh("a", "eu", 1, &[("X", 3)])];
        let err = allocate(&[line("X", 4)], &c, &region("eu")).unwrap_err();
        assert_eq!(
            err,
            Shortfall {
                sku: sku("X"),
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
                    warehouse_id: wid(&format!("w{i}")),
                    region: region(if eu { "eu" } else { "us" }),
                    priority,
                    available: stock
                        .into_iter()
                        .enumerate()
                        .map(|(s, q)| (sku(&format!("S{s}")), q))
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
            let lines: Vec<(Sku, Quantity)> = lines.into_iter().map(|(s, q)| line(&format!("S{s}"), q)).collect();
            let total = |sku: &Sku| cands.iter().map(|c| c.available.get(sku).copied().unwrap_or(0)).sum::<u64>();
            let suffices = lines.iter().all(|(s, q)| total(s) >= u64::from(q.get()));
            match allocate(&lines, &cands, &region("eu")) {
                Ok(parts) => {
                    prop_assert!(suffices);
                    for c in &cands {
                        for (sku, have) in &c.available {
                            let taken: u64 = parts.iter().filter(|p| &p.sku == sku && p.warehouse_id == c.warehouse_id).map(|p| u64::from(p.qty.get())).sum();
                            prop_assert!(taken <= *have, "over-allocated {} at {}", sku, c.warehouse_id);
                        }
                    }
                    for (sku, qty) in &lines {
                        let got: u64 = parts.iter().filter(|p| &p.sku == sku).map(|p| u64::from(p.qty.get())).sum();
                        prop_assert_eq!(got, u64::from(qty.get()));
                    }
                }
                Err(short) => {
                    prop_assert!(!suffices);
                    prop_assert!(total(&short.sku) < short.ordered);
                }
            }
        }
    }
}
