//! Browsing without words: category pages, price ranges, "in stock", in price or creation
//! order, the catalog's most common pages.
//!
//! The general path walks every posting of the filters and reads each document's columns
//! (143,000 documents for one category of a million products, all of them for "in stock").
//! Here each index segment keeps, once per segment (segments never change, only their
//! deleted-document set does), every category's documents sorted by (price, creation), with
//! whether each was in stock. A price range is then two binary searches per category,
//! counting is a pass over the range checking only whether each document is alive (and in
//! stock), and a page in price order is the first few alive entries.
//!
//! Answers exactly what the general path answers (a test compares them): the same total,
//! facets, page and cursor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tantivy::index::SegmentId;
use tantivy::{DocAddress, DocId, Searcher, SegmentReader};

use super::{push_bounded, score_key, Hit, Key, PageFruit, Rank, SearchQuery, SortBy, PRICE_BANDS};

#[derive(Debug, Clone, Copy)]
struct Entry {
    price: i64,
    created: u64,
    doc: DocId,
    in_stock: bool,
}

/// One segment's documents per category, each list sorted by (price, created).
struct SegmentLists {
    by_category: HashMap<String, Vec<Entry>>,
}

impl SegmentLists {
    fn build(reader: &SegmentReader) -> tantivy::Result<SegmentLists> {
        let fast = reader.fast_fields();
        let price = fast.i64("price")?;
        let created = fast.u64("created")?;
        let available = fast.i64("available")?;
        let mut by_ord: HashMap<u64, Vec<Entry>> = HashMap::new();
        let Some(category) = fast.str("category")? else {
            return Ok(SegmentLists {
                by_category: HashMap::new(),
            });
        };
        for doc in 0..reader.max_doc() {
            let created = created.first(doc).unwrap_or(0);
            // A document of stock whose product is not created yet is never shown.
            if created == 0 {
                continue;
            }
            let Some(ord) = category.ords().first(doc) else {
                continue;
            };
            by_ord.entry(ord).or_default().push(Entry {
                price: price.first(doc).unwrap_or(0),
                created,
                doc,
                in_stock: available.first(doc).unwrap_or(0) >= 1,
            });
        }
        let mut by_category = HashMap::with_capacity(by_ord.len());
        let mut name = String::new();
        for (ord, mut entries) in by_ord {
            if category.ord_to_str(ord, &mut name)? {
                entries.sort_unstable_by_key(|e| (e.price, e.created));
                by_category.insert(name.clone(), entries);
            }
        }
        Ok(SegmentLists { by_category })
    }
}

/// The lists of the segments searched lately, built on first use.
#[derive(Default)]
pub(super) struct Browse {
    segments: Mutex<HashMap<SegmentId, Arc<SegmentLists>>>,
}

impl Browse {
    /// Whether [`Browse::page`] answers `q`: no text, no warehouse, not in title order.
    pub(super) fn answers(q: &SearchQuery) -> bool {
        q.q.trim().is_empty() && q.warehouse.is_none() && q.sort != SortBy::Title
    }

    fn lists(&self, reader: &SegmentReader) -> tantivy::Result<Arc<SegmentLists>> {
        let id = reader.segment_id();
        if let Some(l) = self.segments.lock().ok().and_then(|s| s.get(&id).cloned()) {
            return Ok(l);
        }
        // Built outside the lock: two searches may build the same lists, never wait on
        // each other.
        let lists = Arc::new(SegmentLists::build(reader)?);
        if let Ok(mut s) = self.segments.lock() {
            s.insert(id, lists.clone());
        }
        Ok(lists)
    }

    /// Forgets the lists of segments no longer in the index (merged away).
    pub(super) fn keep_only(&self, searcher: &Searcher) {
        let live: Vec<SegmentId> = searcher
            .segment_readers()
            .iter()
            .map(SegmentReader::segment_id)
            .collect();
        if let Ok(mut s) = self.segments.lock() {
            s.retain(|id, _| live.contains(id));
        }
    }

    /// Total, facets and the page after `q.after` for a query [`Browse::answers`].
    pub(super) fn page(&self, searcher: &Searcher, q: &SearchQuery) -> tantivy::Result<PageFruit> {
        let mut fruit = PageFruit::default();
        let (lo, hi) = (
            q.min_price.unwrap_or(i64::MIN),
            q.max_price.unwrap_or(i64::MAX),
        );
        let keep = q.limit.max(1) + 1;
        let after = q.after.as_ref().map(|c| c.rank.clone());
        for (segment, reader) in searcher.segment_readers().iter().enumerate() {
            let lists = self.lists(reader)?;
            let chosen: Vec<(&String, &Vec<Entry>)> = match &q.category {
                Some(c) => lists.by_category.get_key_value(c).into_iter().collect(),
                None => lists.by_category.iter().collect(),
            };
            let shown = |e: &&Entry| {
                (!q.in_stock || e.in_stock)
                    && reader.alive_bitset().is_none_or(|a| a.is_alive(e.doc))
            };
            let hit = |e: &Entry| {
                let key = match q.sort {
                    SortBy::PriceAsc => e.price,
                    SortBy::PriceDesc => e.price.saturating_neg(),
                    SortBy::Newest => -(e.created as i64),
                    SortBy::Relevance | SortBy::Title => score_key(0.0),
                };
                Hit {
                    rank: Rank {
                        key: Key::Num(key),
                        created: e.created,
                    },
                    score: 0.0,
                    addr: DocAddress::new(segment as u32, e.doc),
                }
            };
            let mut top = std::collections::BinaryHeap::new();
            for (category, entries) in chosen {
                let from = entries.partition_point(|e| e.price < lo);
                let to = entries.partition_point(|e| e.price <= hi);
                let in_range = &entries[from..to.max(from)];

                let mut total = 0u64;
                let mut band = 0;
                for e in in_range.iter().filter(shown) {
                    total += 1;
                    // Entries come in price order, so the band only moves up.
                    while band < PRICE_BANDS.len()
                        && PRICE_BANDS[band].1.is_some_and(|upper| e.price >= upper)
                    {
                        band += 1;
                    }
                    if band < PRICE_BANDS.len() && e.price >= PRICE_BANDS[band].0 {
                        fruit.bands[band] += 1;
                    }
                }
                if total == 0 {
                    continue;
                }
                fruit.total += total;
                *fruit.categories.entry(category.clone()).or_default() += total;

                let beaten = |top: &std::collections::BinaryHeap<Hit>, h: &Hit| {
                    top.len() == keep && top.peek().is_some_and(|w| h.rank >= w.rank)
                };
                match q.sort {
                    SortBy::PriceAsc => {
                        // Ranks ascend with the entries: the first shown ones after the cursor.
                        for e in in_range.iter().filter(shown) {
                            let h = hit(e);
                            if after.as_ref().is_some_and(|a| h.rank <= *a) {
                                continue;
                            }
                            if beaten(&top, &h) {
                                break;
                            }
                            push_bounded(&mut top, h, keep);
                        }
                    }
                    SortBy::PriceDesc => {
                        // Backwards, prices descend; within one price, creation order is
                        // reversed, so the heap sorts that out, and the walk stops once past
                        // the worst price kept.
                        for e in in_range.iter().rev().filter(shown) {
                            let h = hit(e);
                            if after.as_ref().is_some_and(|a| h.rank <= *a) {
                                continue;
                            }
                            if top.len() == keep
                                && top.peek().is_some_and(|w: &Hit| h.rank.key > w.rank.key)
                            {
                                break;
                            }
                            push_bounded(&mut top, h, keep);
                        }
                    }
                    SortBy::Newest | SortBy::Relevance | SortBy::Title => {
                        for e in in_range.iter().filter(shown) {
                            let h = hit(e);
                            if after.as_ref().is_some_and(|a| h.rank <= *a) || beaten(&top, &h) {
                                continue;
                            }
                            push_bounded(&mut top, h, keep);
                        }
                    }
                }
            }
            for h in top {
                push_bounded(&mut fruit.top, h, keep);
            }
        }
        Ok(fruit)
    }
}

#[cfg(test)]
mod tests {
    use emporium_domain::values::{
        Category, Currency, Description, Money, Quantity, Sku, Title, WarehouseId,
    };
    use emporium_domain::{Event, ProductEvent, StockItemEvent};
    use emporium_event_store::{Envelope, EventMetadata};

    use super::super::{Cursor, Generation, SearchQuery, SortBy};

    fn envelope(position: i64, sku: &str, payload: Event) -> Envelope<Event> {
        Envelope {
            position,
            event_id: uuid::Uuid::new_v4(),
            aggregate_type: "Product".into(),
            aggregate_id: sku.into(),
            sequence: 1,
            event_type: "ProductEvent".into(),
            event_version: "1.0".into(),
            payload,
            metadata: EventMetadata::system("test"),
            recorded_at: chrono::Utc::now(),
        }
    }

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::parse("EUR").unwrap()).unwrap()
    }

    /// Every browse query over an index of several segments with replaced (deleted)
    /// documents pages through exactly what the general path pages through.
    #[test]
    fn browsing_answers_what_the_general_path_answers() {
        let g = Generation::open(None).unwrap();
        let categories = ["audio", "kitchen", "tools"];
        let mut state: u64 = 7;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let mut position = 0;
        // Products in four commits (segments), prices with many ties.
        for batch in 0..4 {
            let mut events = Vec::new();
            for i in 0..150 {
                position += 1;
                let sku = format!("S-{batch}-{i}");
                events.push(envelope(
                    position,
                    &sku,
                    Event::Product(ProductEvent::ProductCreated {
                        sku: Sku::parse(&sku).unwrap(),
                        title: Title::parse(&format!("Thing {i}")).unwrap(),
                        description: Description::parse("x").unwrap(),
                        category: Category::parse(categories[(i % 3) as usize]).unwrap(),
                        price: eur(100 * (1 + next(15) as i64)),
                        merchant_id: None,
                    }),
                ));
            }
            g.apply(&events, position, true).unwrap();
        }
        // Price changes replace documents: the old ones stay in their segments, deleted.
        let mut events = Vec::new();
        for _ in 0..120 {
            position += 1;
            let sku = format!("S-{}-{}", next(4), next(150));
            events.push(envelope(
                position,
                &sku,
                Event::Product(ProductEvent::ProductPriceChanged {
                    sku: Sku::parse(&sku).unwrap(),
                    old_price: eur(1),
                    new_price: eur(100 * (1 + next(15) as i64)),
                }),
            ));
        }
        g.apply(&events, position, true).unwrap();
        // Stock for some: "in stock" differs between documents and between versions of one.
        let mut events = Vec::new();
        for _ in 0..200 {
            position += 1;
            let sku = format!("S-{}-{}", next(4), next(150));
            let qty = next(3);
            events.push(envelope(
                position,
                &sku,
                Event::StockItem(StockItemEvent::StockReceived {
                    warehouse_id: WarehouseId::parse("wh-1").unwrap(),
                    sku: Sku::parse(&sku).unwrap(),
                    qty: Quantity::new(qty as i64 + 1).unwrap(),
                    on_hand: qty,
                    reserved: 0,
                    available: qty,
                }),
            ));
        }
        g.apply(&events, position, true).unwrap();

        let mut compared = 0;
        for round in 0..120 {
            let min = (round % 3 != 0).then(|| 100 * next(8) as i64);
            let max = (round % 4 != 0).then(|| 100 * (8 + next(10)) as i64);
            let sorts = [
                SortBy::PriceAsc,
                SortBy::PriceDesc,
                SortBy::Newest,
                SortBy::Relevance,
            ];
            let mut q = SearchQuery {
                category: (round % 5 != 0).then(|| categories[round % 3].to_string()),
                min_price: min,
                max_price: max,
                in_stock: next(3) == 0,
                sort: sorts[next(4) as usize],
                limit: 1 + next(25) as usize,
                ..Default::default()
            };
            assert!(super::Browse::answers(&q));
            loop {
                let fast = g.search_by(&q, true).unwrap();
                let general = g.search_by(&q, false).unwrap();
                let skus = |r: &super::super::SearchResults| {
                    r.items
                        .iter()
                        .map(|i| (i.sku.clone(), i.price_minor))
                        .collect::<Vec<_>>()
                };
                assert_eq!(skus(&fast), skus(&general), "{q:?}");
                assert_eq!(fast.total, general.total, "{q:?}");
                assert_eq!(
                    serde_json::to_value(&fast.facets).unwrap(),
                    serde_json::to_value(&general.facets).unwrap(),
                    "{q:?}"
                );
                let cursors = |c: &Option<Cursor>| c.as_ref().map(Cursor::encode);
                assert_eq!(cursors(&fast.next), cursors(&general.next), "{q:?}");
                compared += 1;
                match fast.next {
                    Some(c) => q.after = Some(c),
                    None => break,
                }
            }
        }
        assert!(compared > 400, "only {compared} pages compared");
    }
}
