//! Catalog search: a full-text index (tantivy) of every product with its price and stock,
//! kept current from the feed by each engine process, the same on both backends.
//!
//! Why an index of our own and not the database: the embedded store (SQLite) has no trigram
//! or stemming support, so the two backends used to rank differently, and Postgres trigram
//! search does not scale to millions of SKUs (ADR 0015).
//!
//! - **Exactly once.** Each commit of the index carries the feed position it covers in its
//!   payload; a restarted process opens the index and continues after that position. A
//!   product's document is replaced whole (delete by SKU, add), so replaying a batch
//!   after a crash between a commit and its acknowledgement is harmless anyway.
//! - **Per process.** Several engines each keep their own index (in memory, or in a
//!   directory with `--search-dir`); nothing is shared but the feed.
//! - **Blue/green.** [`CatalogSearch::rebuild`] builds a new index from the whole feed
//!   while the live one serves, then swaps it in.
//! - **Relevance.** Every word of the query must match a product (else any word may): its
//!   stem in title (weighted highest), category or description; or, from four letters, the
//!   word within one edit (two from eight letters) of a title or category word; the
//!   last word also as a prefix (search as you type). An exact SKU ranks first.
//! - **Pages** are keyset cursors over (sort key, creation position), never offsets.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use cqrs_es::Aggregate;
use emporium_domain::{Event, ProductEvent, StockItem};
use emporium_event_store::{Envelope, Store};
use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, SegmentCollector, TopDocs};
use tantivy::columnar::{Column, StrColumn};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, RangeQuery,
    TermQuery,
};
use tantivy::schema::{
    Field, IndexRecordOption, NumericOptions, Schema, TextFieldIndexing, TextOptions, Value,
    STORED, STRING,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, TextAnalyzer, TokenStream,
};
use tantivy::{
    DocAddress, DocId, Index, IndexReader, IndexWriter, ReloadPolicy, Score, SegmentReader,
    TantivyDocument, Term,
};

mod browse;

use crate::catalog::{empty_facets, Facets, Item, StockLevel, PRICE_BANDS};
use crate::{ProjectionError, Result};

/// Events applied per commit at most, so a long catch-up still commits (and shows progress).
const BATCH: i64 = 5_000;
/// Feed positions looked at per read: on a log of mostly orders and payments, one read
/// steps over this many at once (10,000,000 events: 104.7 s to start, 45 s with 5,000).
const SKIP_WINDOW: i64 = 500_000;
/// Commits at most this often while following the feed: each commit makes a segment.
const COMMIT_EVERY: Duration = Duration::from_millis(20);
/// Changes that only move stock counts (no product field, no warehouse going in or out of
/// stock) wait up to this long before they are committed. Under checkout load a hot item is
/// reserved dozens of times a second; each commit makes a segment, and committing every
/// reservation was a tenth of the engine's CPU. In-stock flips and product changes still
/// commit at once.
const COUNTS_EVERY: Duration = Duration::from_millis(250);
/// Products held back at most; beyond this the held changes are committed.
const PENDING_MAX: usize = 5_000;
/// With nothing to apply, how often the feed is read again for events appended by other
/// processes (appends through this one wake the follower at once).
const IDLE_POLL: Duration = Duration::from_millis(20);
/// Stored products are read back per changed SKU and per result: small blocks make each
/// read decompress less (tantivy's default is 16 KiB).
const DOCSTORE_BLOCK: usize = 4 * 1024;
/// Writer memory. One indexing thread: the box's other core serves searches and Postgres.
const WRITER_HEAP: usize = 20 * 1024 * 1024;
/// Changing the schema or analysis changes this: an index of another version is rebuilt.
const SCHEMA_VERSION: &str = "2";

/// How results are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    Relevance,
    PriceAsc,
    PriceDesc,
    /// Most recently created first.
    Newest,
    Title,
}

impl SortBy {
    fn code(self) -> char {
        match self {
            SortBy::Relevance => 'r',
            SortBy::PriceAsc => 'a',
            SortBy::PriceDesc => 'd',
            SortBy::Newest => 'n',
            SortBy::Title => 't',
        }
    }
}

/// A page's position in a result order: the last item's sort key and creation position.
#[derive(Debug, Clone, PartialEq)]
pub struct Cursor {
    sort: SortBy,
    rank: Rank,
}

impl Cursor {
    /// The opaque text clients pass back: `k`, the sort's letter, the creation position,
    /// `.`, then the key (a number, or the title in hex).
    pub fn encode(&self) -> String {
        let key = match &self.rank.key {
            Key::Num(n) => n.to_string(),
            Key::Text(t) => hex::encode(t.as_bytes()),
        };
        format!("k{}{}.{key}", self.sort.code(), self.rank.created)
    }

    /// Parses a cursor in the form [`Cursor::encode`] makes; `None` when it is not one.
    /// Numbers beyond their type's range are clamped to it (a page after them is empty or
    /// the first), so every cursor of the documented form is a valid request.
    pub fn decode(text: &str) -> Option<Cursor> {
        let mut chars = text.strip_prefix('k')?.chars();
        let sort = match chars.next()? {
            'r' => SortBy::Relevance,
            'a' => SortBy::PriceAsc,
            'd' => SortBy::PriceDesc,
            'n' => SortBy::Newest,
            't' => SortBy::Title,
            _ => return None,
        };
        let (created, key) = chars.as_str().split_once('.')?;
        if created.is_empty() || !created.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let created = created.parse::<u64>().unwrap_or(u64::MAX);
        let key = if sort == SortBy::Title {
            Key::Text(String::from_utf8_lossy(&hex::decode(key).ok()?).into_owned())
        } else {
            let digits = key.strip_prefix('-').unwrap_or(key);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Key::Num(match key.parse::<i64>() {
                Ok(n) => n,
                Err(_) if key.starts_with('-') => i64::MIN,
                Err(_) => i64::MAX,
            })
        };
        Some(Cursor {
            sort,
            rank: Rank { key, created },
        })
    }

    /// The order this cursor continues.
    pub fn sort(&self) -> SortBy {
        self.sort
    }
}

/// A catalog search.
#[derive(Debug, Clone, Default)]
pub struct SearchQuery {
    pub q: String,
    pub category: Option<String>,
    pub min_price: Option<i64>,
    pub max_price: Option<i64>,
    pub in_stock: bool,
    /// Only products with stock available in this warehouse.
    pub warehouse: Option<String>,
    pub sort: SortBy,
    pub after: Option<Cursor>,
    pub limit: usize,
}

/// One page of results, with counts over all matches.
#[derive(Debug, Clone)]
pub struct SearchResults {
    pub items: Vec<Item>,
    pub total: i64,
    pub facets: Facets,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<Cursor>,
    /// The feed position the index covered when it answered.
    pub position: i64,
}

/// A product as the index holds it (the stored fields of its document).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Product {
    sku: String,
    title: String,
    description: String,
    category: String,
    price_minor: i64,
    currency: String,
    discontinued: bool,
    /// Feed position of its `ProductCreated`; 0 while only stock is known (not listed).
    created: u64,
    /// Per warehouse: on hand, reserved, available.
    stock: BTreeMap<String, (i64, i64, i64)>,
}

impl Product {
    fn totals(&self) -> (i64, i64, i64) {
        self.stock
            .values()
            .fold((0, 0, 0), |(a, b, c), (x, y, z)| (a + x, b + y, c + z))
    }
}

#[derive(Clone, Copy)]
struct Fields {
    sku: Field,
    sku_key: Field,
    title: Field,
    title_raw: Field,
    title_sort: Field,
    description: Field,
    category: Field,
    category_text: Field,
    price: Field,
    available: Field,
    in_stock_at: Field,
    created: Field,
    /// 1 on a document whose product is not created yet (only its stock is known).
    unlisted: Field,
    stored: Field,
}

const STEM: &str = "emporium_stem";
const LOWER: &str = "emporium_lower";

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = |tokenizer: &str, option: IndexRecordOption| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(option),
        )
    };
    let f = Fields {
        sku: b.add_text_field("sku", STRING | STORED),
        sku_key: b.add_text_field("sku_key", STRING),
        title: b.add_text_field("title", text(STEM, IndexRecordOption::WithFreqs)),
        title_raw: b.add_text_field("title_raw", text(LOWER, IndexRecordOption::Basic)),
        title_sort: b.add_text_field("title_sort", TextOptions::default().set_fast("raw")),
        description: b.add_text_field("description", text(STEM, IndexRecordOption::WithFreqs)),
        category: b.add_text_field("category", STRING | TextOptions::default().set_fast("raw")),
        category_text: b.add_text_field("category_text", text(STEM, IndexRecordOption::WithFreqs)),
        price: b.add_i64_field("price", NumericOptions::default().set_fast()),
        available: b.add_i64_field("available", NumericOptions::default().set_fast()),
        in_stock_at: b.add_text_field("in_stock_at", STRING),
        created: b.add_u64_field("created", NumericOptions::default().set_fast()),
        unlisted: b.add_u64_field("unlisted", NumericOptions::default().set_indexed()),
        stored: b.add_text_field("stored", STORED),
    };
    (b.build(), f)
}

fn register_analyzers(index: &Index) {
    index.tokenizers().register(
        STEM,
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .filter(Stemmer::new(Language::English))
            .build(),
    );
    index.tokenizers().register(
        LOWER,
        TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(40))
            .filter(LowerCaser)
            .build(),
    );
}

fn search_error(e: impl std::fmt::Display) -> ProjectionError {
    ProjectionError::Search(e.to_string())
}

/// One generation of the index: its tantivy index, a writer and a reader.
struct Generation {
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    f: Fields,
    /// Feed position covered by the last commit.
    position: AtomicI64,
    /// Read from the feed, not yet committed (see [`COUNTS_EVERY`]).
    pending: Mutex<Pending>,
    /// Commits made (a figure for tests and benchmarks).
    commits: std::sync::atomic::AtomicU64,
    browse: browse::Browse,
}

/// Products changed by events read after the last commit. A crash loses them harmlessly:
/// the index's committed position is still before those events, which are read again.
#[derive(Default)]
struct Pending {
    products: HashMap<String, Product>,
    /// Feed position read through (0: nothing held).
    through: i64,
    /// When the oldest held change was read.
    since: Option<Instant>,
}

impl Pending {
    fn due(&self) -> bool {
        !self.products.is_empty()
            && (self.products.len() >= PENDING_MAX
                || self.since.is_some_and(|t| t.elapsed() >= COUNTS_EVERY))
    }
}

impl Generation {
    /// Opens the index in `dir` (created when missing, or rebuilt from scratch when it was
    /// made by another schema version), or one in memory.
    fn open(dir: Option<&Path>) -> Result<Generation> {
        let (schema, f) = schema();
        let settings = tantivy::IndexSettings {
            docstore_blocksize: DOCSTORE_BLOCK,
            ..Default::default()
        };
        let index = match dir {
            None => Index::builder()
                .schema(schema)
                .settings(settings)
                .create_in_ram()
                .map_err(search_error)?,
            Some(dir) => {
                let version_file = dir.join("emporium-schema-version");
                let same =
                    std::fs::read_to_string(&version_file).is_ok_and(|v| v == SCHEMA_VERSION);
                if !same && dir.exists() {
                    std::fs::remove_dir_all(dir).map_err(search_error)?;
                }
                std::fs::create_dir_all(dir).map_err(search_error)?;
                let index = match Index::open_in_dir(dir) {
                    Ok(i) => i,
                    Err(_) => Index::builder()
                        .schema(schema)
                        .settings(settings)
                        .create_in_dir(dir)
                        .map_err(search_error)?,
                };
                std::fs::write(&version_file, SCHEMA_VERSION).map_err(search_error)?;
                index
            }
        };
        register_analyzers(&index);
        let position = index
            .load_metas()
            .map_err(search_error)?
            .payload
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(0);
        let writer: IndexWriter = index
            .writer_with_num_threads(1, WRITER_HEAP)
            .map_err(search_error)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(search_error)?;
        Ok(Generation {
            index,
            reader,
            writer: Mutex::new(writer),
            f,
            position: AtomicI64::new(position),
            pending: Mutex::new(Pending::default()),
            commits: std::sync::atomic::AtomicU64::new(0),
            browse: browse::Browse::default(),
        })
    }

    fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    fn pending(&self) -> Result<std::sync::MutexGuard<'_, Pending>> {
        self.pending
            .lock()
            .map_err(|_| search_error("search index pending changes poisoned"))
    }

    /// The feed position read through: the committed one, or beyond it while changes wait.
    fn read_position(&self) -> Result<i64> {
        Ok(self.position().max(self.pending()?.through))
    }

    /// Applies events after the read position, all those of the feed up to `covered` that
    /// can change a document. Commits them with `covered` when `force`, when any changes
    /// what a search can match or filter on, or when held changes are due; otherwise holds
    /// them (stock counts only).
    fn apply(&self, events: &[Envelope<Event>], covered: i64, force: bool) -> Result<()> {
        let mut pending = self.pending()?;
        let from = self.position().max(pending.through);
        let events: Vec<&Envelope<Event>> = events.iter().filter(|e| e.position > from).collect();
        let last = events.last().map_or(covered, |e| e.position.max(covered));
        if events.is_empty() {
            // Nothing here changes a document: the index covers these positions as it is.
            // (Not committed: after a restart they are read again, and stepped over again.)
            if pending.products.is_empty() {
                self.position.fetch_max(last, Ordering::AcqRel);
            } else {
                pending.through = pending.through.max(last);
            }
            return if (force && !pending.products.is_empty()) || pending.due() {
                self.commit(&mut pending)
            } else {
                Ok(())
            };
        }
        let searcher = self.reader.searcher();
        let mut visible = force;
        let current = |sku: &str, pending: &mut Pending| -> Result<()> {
            if !pending.products.contains_key(sku) {
                let found = self.stored(&searcher, sku)?.unwrap_or_else(|| Product {
                    sku: sku.to_string(),
                    ..Product::default()
                });
                pending.products.insert(sku.to_string(), found);
            }
            Ok(())
        };
        for event in events {
            match &event.payload {
                Event::Product(ProductEvent::ProductCreated {
                    sku,
                    title,
                    description,
                    category,
                    price,
                    ..
                }) => {
                    visible = true;
                    current(sku.as_str(), &mut pending)?;
                    if let Some(p) = pending.products.get_mut(sku.as_str()) {
                        p.title = title.as_str().to_string();
                        p.description = description.as_str().to_string();
                        p.category = category.as_str().to_string();
                        p.price_minor = price.amount_minor();
                        p.currency = price.currency().as_str().to_string();
                        p.created = event.position.max(1) as u64;
                    }
                }
                Event::Product(ProductEvent::ProductDetailsChanged {
                    title,
                    description,
                    category,
                }) => {
                    visible = true;
                    current(&event.aggregate_id, &mut pending)?;
                    if let Some(p) = pending.products.get_mut(&event.aggregate_id) {
                        p.title = title.as_str().to_string();
                        p.description = description.as_str().to_string();
                        p.category = category.as_str().to_string();
                    }
                }
                Event::Product(ProductEvent::ProductPriceChanged { sku, new_price, .. }) => {
                    visible = true;
                    current(sku.as_str(), &mut pending)?;
                    if let Some(p) = pending.products.get_mut(sku.as_str()) {
                        p.price_minor = new_price.amount_minor();
                        p.currency = new_price.currency().as_str().to_string();
                    }
                }
                Event::Product(ProductEvent::ProductDiscontinued { sku }) => {
                    visible = true;
                    current(sku.as_str(), &mut pending)?;
                    if let Some(p) = pending.products.get_mut(sku.as_str()) {
                        p.discontinued = true;
                    }
                }
                Event::StockItem(e) => {
                    let (warehouse, sku, levels) = e.levels();
                    current(sku.as_str(), &mut pending)?;
                    if let Some(p) = pending.products.get_mut(sku.as_str()) {
                        let now = (
                            levels.on_hand as i64,
                            levels.reserved as i64,
                            levels.available as i64,
                        );
                        // A warehouse going in or out of stock changes what the in-stock
                        // and warehouse filters match; a count alone only what is shown.
                        match p.stock.insert(warehouse.as_str().to_string(), now) {
                            Some(before) if (before.2 > 0) == (now.2 > 0) => {}
                            _ => visible = true,
                        }
                    }
                }
                Event::Warehouse(_)
                | Event::Order(_)
                | Event::Payment(_)
                | Event::Checkout(_)
                | Event::Promotion(_)
                | Event::Merchant(_) => {}
            }
        }
        pending.through = last;
        if pending.since.is_none() {
            pending.since = Some(Instant::now());
        }
        if visible || pending.due() {
            self.commit(&mut pending)
        } else {
            Ok(())
        }
    }

    /// Commits the held changes if they are due.
    fn flush_due(&self) -> Result<()> {
        let mut pending = self.pending()?;
        if pending.due() {
            self.commit(&mut pending)?;
        }
        Ok(())
    }

    /// Writes the held products and commits them with the position read through.
    fn commit(&self, pending: &mut Pending) -> Result<()> {
        let t0 = Instant::now();
        let through = pending.through.max(self.position());
        let n_products = pending.products.len();
        let mut writer = self
            .writer
            .lock()
            .map_err(|_| search_error("index writer poisoned"))?;
        for product in pending.products.values() {
            writer.delete_term(Term::from_field_text(self.f.sku, &product.sku));
            writer
                .add_document(self.document(product)?)
                .map_err(search_error)?;
        }
        let t1 = Instant::now();
        let mut commit = writer.prepare_commit().map_err(search_error)?;
        commit.set_payload(&through.to_string());
        commit.commit().map_err(search_error)?;
        let t2 = Instant::now();
        self.reader.reload().map_err(search_error)?;
        self.browse.keep_only(&self.reader.searcher());
        metrics::histogram!("emporium_search_commit_seconds").record((t2 - t1).as_secs_f64());
        metrics::counter!("emporium_search_commits_total").increment(1);
        tracing::debug!(
            products = n_products,
            documents_ms = (t1 - t0).as_secs_f64() * 1e3,
            commit_ms = (t2 - t1).as_secs_f64() * 1e3,
            reload_ms = t2.elapsed().as_secs_f64() * 1e3,
            "search index commit"
        );
        pending.products.clear();
        pending.since = None;
        self.position.store(through, Ordering::Release);
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The stored product with this SKU, as of the last commit.
    fn stored(&self, searcher: &tantivy::Searcher, sku: &str) -> Result<Option<Product>> {
        let query = TermQuery::new(
            Term::from_field_text(self.f.sku, sku),
            IndexRecordOption::Basic,
        );
        let hits = searcher
            .search(&query, &TopDocs::with_limit(1).order_by_score())
            .map_err(search_error)?;
        let Some((_, addr)) = hits.first() else {
            return Ok(None);
        };
        self.load(searcher, *addr).map(Some)
    }

    fn load(&self, searcher: &tantivy::Searcher, addr: DocAddress) -> Result<Product> {
        let doc: TantivyDocument = searcher.doc(addr).map_err(search_error)?;
        let json = doc
            .get_first(self.f.stored)
            .and_then(|v| v.as_str())
            .ok_or_else(|| search_error("a document without its stored product"))?;
        serde_json::from_str(json).map_err(search_error)
    }

    fn document(&self, p: &Product) -> Result<TantivyDocument> {
        let f = &self.f;
        let mut d = TantivyDocument::default();
        d.add_text(f.sku, &p.sku);
        d.add_text(f.sku_key, p.sku.to_lowercase());
        d.add_text(f.title, &p.title);
        d.add_text(f.title_raw, &p.title);
        d.add_text(f.title_sort, p.title.to_lowercase());
        d.add_text(f.description, &p.description);
        d.add_text(f.category, &p.category);
        d.add_text(f.category_text, &p.category);
        d.add_i64(f.price, p.price_minor);
        d.add_i64(f.available, p.totals().2);
        for (warehouse, (_, _, available)) in &p.stock {
            if *available > 0 {
                d.add_text(f.in_stock_at, warehouse);
            }
        }
        d.add_u64(f.created, p.created);
        if p.created == 0 {
            d.add_u64(f.unlisted, 1);
        }
        d.add_text(f.stored, serde_json::to_string(p).map_err(search_error)?);
        Ok(d)
    }

    /// Words of `text` as the index's analyzer `name` makes them.
    fn analyze(&self, name: &str, text: &str) -> Vec<String> {
        let Some(mut analyzer) = self.index.tokenizers().get(name) else {
            return Vec::new();
        };
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    fn text_query(&self, q: &str, all_words: bool) -> Option<Box<dyn Query>> {
        let f = &self.f;
        let words = self.analyze(LOWER, q);
        let typing_last = !q.ends_with(char::is_whitespace);
        let mut groups: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (n, word) in words.iter().enumerate() {
            let mut any: Vec<(Occur, Box<dyn Query>)> = Vec::new();
            let boosted = |q: Box<dyn Query>, boost: f32| -> (Occur, Box<dyn Query>) {
                (Occur::Should, Box::new(BoostQuery::new(q, boost)))
            };
            for stem in self.analyze(STEM, word) {
                for (field, boost) in [(f.title, 3.0), (f.category_text, 1.5), (f.description, 1.0)]
                {
                    any.push(boosted(
                        Box::new(TermQuery::new(
                            Term::from_field_text(field, &stem),
                            IndexRecordOption::WithFreqs,
                        )),
                        boost,
                    ));
                }
            }
            let letters = word.chars().count();
            let edits: u8 = match letters {
                0..=3 => 0,
                4..=7 => 1,
                _ => 2,
            };
            // A word one edit away scores above one two edits away (each fuzzy clause
            // scores its boost, whatever the distance within it).
            for distance in 1..=edits {
                for (field, boost) in [(f.title_raw, 1.0), (f.category_text, 0.5)] {
                    any.push(boosted(
                        Box::new(FuzzyTermQuery::new(
                            Term::from_field_text(field, word),
                            distance,
                            true,
                        )),
                        if distance == 1 { boost } else { boost * 0.5 },
                    ));
                }
            }
            if n + 1 == words.len() && typing_last && letters >= 2 {
                for (field, boost) in [(f.title_raw, 1.2), (f.category_text, 0.5)] {
                    any.push(boosted(
                        Box::new(FuzzyTermQuery::new_prefix(
                            Term::from_field_text(field, word),
                            0,
                            true,
                        )),
                        boost,
                    ));
                }
            }
            let occur = if all_words {
                Occur::Must
            } else {
                Occur::Should
            };
            groups.push((occur, Box::new(BooleanQuery::new(any))));
        }
        let mut top: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let sku = q.trim().to_lowercase();
        if !sku.is_empty() {
            top.push((
                Occur::Should,
                Box::new(BoostQuery::new(
                    Box::new(TermQuery::new(
                        Term::from_field_text(f.sku_key, &sku),
                        IndexRecordOption::Basic,
                    )),
                    100.0,
                )),
            ));
        }
        if !groups.is_empty() {
            top.push((Occur::Should, Box::new(BooleanQuery::new(groups))));
        }
        (!top.is_empty()).then(|| Box::new(BooleanQuery::new(top)) as Box<dyn Query>)
    }

    fn filters(&self, q: &SearchQuery) -> Vec<Box<dyn Query>> {
        let f = &self.f;
        let term =
            |t: Term| -> Box<dyn Query> { Box::new(TermQuery::new(t, IndexRecordOption::Basic)) };
        let mut v = Vec::new();
        if let Some(c) = &q.category {
            v.push(term(Term::from_field_text(f.category, c)));
        }
        // With another restriction, the price range is checked by the collector on the price
        // column it reads anyway (cheaper than intersecting a range over the whole column);
        // alone, the range query selects.
        let restricted =
            !q.q.trim().is_empty() || q.category.is_some() || q.in_stock || q.warehouse.is_some();
        if !restricted && (q.min_price.is_some() || q.max_price.is_some()) {
            let bound = |b: Option<i64>| match b {
                Some(n) => Bound::Included(Term::from_field_i64(f.price, n)),
                None => Bound::Unbounded,
            };
            v.push(Box::new(RangeQuery::new(
                bound(q.min_price),
                bound(q.max_price),
            )));
        }
        if q.in_stock {
            v.push(Box::new(RangeQuery::new(
                Bound::Included(Term::from_field_i64(f.available, 1)),
                Bound::Unbounded,
            )));
        }
        if let Some(w) = &q.warehouse {
            v.push(term(Term::from_field_text(f.in_stock_at, w)));
        }
        v
    }

    fn search(&self, q: &SearchQuery) -> Result<SearchResults> {
        self.search_by(q, true)
    }

    /// [`Generation::search`], through the category browsing lists where they answer
    /// (`browse`) or always through the general path.
    fn search_by(&self, q: &SearchQuery, browse: bool) -> Result<SearchResults> {
        let position = self.position();
        let searcher = self.reader.searcher();
        let text = q.q.trim();
        // An inverted price range matches nothing (RangeQuery would not say so).
        if matches!((q.min_price, q.max_price), (Some(lo), Some(hi)) if lo > hi) {
            return Ok(SearchResults {
                items: Vec::new(),
                total: 0,
                facets: empty_facets(),
                next: None,
                position,
            });
        }
        let run = |all_words: bool| -> Result<PageFruit> {
            let mut clauses: Vec<(Occur, Box<dyn Query>)> = self
                .filters(q)
                .into_iter()
                .map(|f| {
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(f, 0.0)) as Box<dyn Query>,
                    )
                })
                .collect();
            let scored = match (text.is_empty(), self.text_query(&q.q, all_words)) {
                (false, Some(t)) => {
                    clauses.push((Occur::Must, t));
                    true
                }
                (false, None) => return Ok(PageFruit::default()),
                (true, _) => {
                    // Filters alone select; with none, every document does.
                    if clauses.is_empty() {
                        clauses.push((Occur::Must, Box::new(AllQuery)));
                    }
                    false
                }
            };
            // Stock known before its product: kept, never shown (a tiny posting list).
            clauses.push((
                Occur::MustNot,
                Box::new(TermQuery::new(
                    Term::from_field_u64(self.f.unlisted, 1),
                    IndexRecordOption::Basic,
                )),
            ));
            let collector = PageCollector {
                sort: q.sort,
                after: q.after.as_ref().map(|c| c.rank.clone()),
                limit: q.limit.max(1),
                scored: scored && q.sort == SortBy::Relevance,
                prices: q.min_price.unwrap_or(i64::MIN)..=q.max_price.unwrap_or(i64::MAX),
            };
            searcher
                .search(&BooleanQuery::new(clauses), &collector)
                .map_err(search_error)
        };
        let fruit = if browse && browse::Browse::answers(q) {
            self.browse.page(&searcher, q).map_err(search_error)?
        } else {
            let mut fruit = run(true)?;
            if fruit.total == 0 && self.analyze(LOWER, text).len() > 1 {
                // No product has every word: show those with some of them.
                fruit = run(false)?;
            }
            fruit
        };
        let mut facets = empty_facets();
        for (category, n) in fruit.categories {
            facets.category.insert(category, n as i64);
        }
        for (band, n) in facets.price.iter_mut().zip(fruit.bands) {
            band.count = n as i64;
        }
        let mut top = fruit.top.into_sorted_vec();
        let more = top.len() > q.limit;
        top.truncate(q.limit);
        let mut items = Vec::with_capacity(top.len());
        for hit in &top {
            let p = self.load(&searcher, hit.addr)?;
            let (on_hand, reserved, available) = p.totals();
            items.push(Item {
                warehouses: p
                    .stock
                    .iter()
                    .map(|(w, (o, r, a))| StockLevel {
                        warehouse_id: w.clone(),
                        on_hand: *o,
                        reserved: *r,
                        available: *a,
                    })
                    .collect(),
                sku: p.sku,
                title: p.title,
                description: p.description,
                category: p.category,
                price_minor: p.price_minor,
                currency: p.currency,
                discontinued: p.discontinued,
                on_hand,
                reserved,
                available,
                score: if hit.score.is_finite() {
                    f64::from(hit.score)
                } else {
                    0.0
                },
            });
        }
        let next = if more {
            top.last().map(|h| Cursor {
                sort: q.sort,
                rank: h.rank.clone(),
            })
        } else {
            None
        };
        Ok(SearchResults {
            items,
            total: fruit.total as i64,
            facets,
            next,
            position,
        })
    }
}

/// A sort key: results are in ascending order of (key, created).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Num(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    key: Key,
    created: u64,
}

/// Scores order like their bits once the sign is folded in; negated, higher scores first.
fn score_key(score: Score) -> i64 {
    let bits = score.to_bits() as i32;
    let ordered = bits ^ (((bits >> 31) as u32) >> 1) as i32;
    -i64::from(ordered)
}

#[derive(Debug, Clone)]
struct Hit {
    rank: Rank,
    score: Score,
    addr: DocAddress,
}

impl PartialEq for Hit {
    fn eq(&self, other: &Self) -> bool {
        self.rank == other.rank
    }
}
impl Eq for Hit {}
impl PartialOrd for Hit {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Hit {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank)
    }
}

/// Collects, in one pass over the matches: their count, the category and price-band
/// facets, and the first `limit + 1` hits after the cursor in the requested order.
struct PageCollector {
    sort: SortBy,
    after: Option<Rank>,
    limit: usize,
    scored: bool,
    /// Only matches priced within this range count.
    prices: std::ops::RangeInclusive<i64>,
}

#[derive(Default)]
struct PageFruit {
    total: u64,
    categories: HashMap<String, u64>,
    bands: [u64; PRICE_BANDS.len()],
    /// A max-heap: its top is the worst hit kept.
    top: BinaryHeap<Hit>,
}

struct PageSegment {
    segment: u32,
    prices_wanted: std::ops::RangeInclusive<i64>,
    sort: SortBy,
    after: Option<Rank>,
    keep: usize,
    price: Column<i64>,
    created: Column<u64>,
    category: Option<StrColumn>,
    title: Option<StrColumn>,
    category_counts: Vec<u64>,
    fruit: PageFruit,
    text: String,
    /// Buffers of `collect_block`, kept between blocks.
    prices: Vec<Option<i64>>,
    kept: Vec<DocId>,
    createds: Vec<Option<u64>>,
    categories: Vec<Option<u64>>,
}

impl Collector for PageCollector {
    type Fruit = PageFruit;
    type Child = PageSegment;

    fn for_segment(&self, segment: u32, reader: &SegmentReader) -> tantivy::Result<PageSegment> {
        let fast = reader.fast_fields();
        let category = fast.str("category")?;
        let terms = category.as_ref().map_or(0, |c| c.num_terms());
        Ok(PageSegment {
            segment,
            prices_wanted: self.prices.clone(),
            sort: self.sort,
            after: self.after.clone(),
            keep: self.limit + 1,
            price: fast.i64("price")?,
            created: fast.u64("created")?,
            category,
            title: if self.sort == SortBy::Title {
                fast.str("title_sort")?
            } else {
                None
            },
            category_counts: vec![0; terms],
            fruit: PageFruit::default(),
            text: String::new(),
            prices: Vec::new(),
            kept: Vec::new(),
            createds: Vec::new(),
            categories: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        self.scored
    }

    fn merge_fruits(&self, fruits: Vec<PageFruit>) -> tantivy::Result<PageFruit> {
        let mut out = PageFruit::default();
        for f in fruits {
            out.total += f.total;
            for (c, n) in f.categories {
                *out.categories.entry(c).or_default() += n;
            }
            for (a, b) in out.bands.iter_mut().zip(f.bands) {
                *a += b;
            }
            for hit in f.top {
                push_bounded(&mut out.top, hit, self.limit + 1);
            }
        }
        Ok(out)
    }
}

fn push_bounded(heap: &mut BinaryHeap<Hit>, hit: Hit, keep: usize) {
    if heap.len() < keep {
        heap.push(hit);
    } else if heap.peek().is_some_and(|worst| hit < *worst) {
        heap.pop();
        heap.push(hit);
    }
}

impl PageSegment {
    /// One match, with its fast-field values already read.
    fn collect_one(
        &mut self,
        doc: DocId,
        score: Score,
        price: i64,
        created: u64,
        category: Option<u64>,
    ) {
        if !self.prices_wanted.contains(&price) {
            return;
        }
        self.fruit.total += 1;
        if let Some(band) = PRICE_BANDS
            .iter()
            .position(|(lo, hi)| price >= *lo && hi.is_none_or(|h| price < h))
        {
            self.fruit.bands[band] += 1;
        }
        if let Some(n) = category.and_then(|ord| self.category_counts.get_mut(ord as usize)) {
            *n += 1;
        }
        let key = match self.sort {
            SortBy::Relevance => Key::Num(score_key(score)),
            SortBy::PriceAsc => Key::Num(price),
            SortBy::PriceDesc => Key::Num(price.saturating_neg()),
            SortBy::Newest => Key::Num(-(created as i64)),
            SortBy::Title => {
                self.text.clear();
                if let Some(t) = &self.title {
                    if let Some(ord) = t.term_ords(doc).next() {
                        let _ = t.ord_to_str(ord, &mut self.text);
                    }
                }
                Key::Text(self.text.clone())
            }
        };
        let rank = Rank { key, created };
        if self.after.as_ref().is_some_and(|after| rank <= *after) {
            return;
        }
        // Most matches of a broad query rank below the page kept so far: skip the push.
        if self.fruit.top.len() >= self.keep
            && self
                .fruit
                .top
                .peek()
                .is_some_and(|worst| rank >= worst.rank)
        {
            return;
        }
        let hit = Hit {
            rank,
            score,
            addr: DocAddress::new(self.segment, doc),
        };
        push_bounded(&mut self.fruit.top, hit, self.keep);
    }
}

impl SegmentCollector for PageSegment {
    type Fruit = PageFruit;

    fn collect(&mut self, doc: DocId, score: Score) {
        let price = self.price.first(doc).unwrap_or(0);
        let created = self.created.first(doc).unwrap_or(0);
        let category = self.category.as_ref().and_then(|c| c.ords().first(doc));
        self.collect_one(doc, score, price, created, category);
    }

    /// Unscored matches come in blocks: their fast-field values are read a block at a time.
    fn collect_block(&mut self, docs: &[DocId]) {
        let mut prices = std::mem::take(&mut self.prices);
        let mut kept = std::mem::take(&mut self.kept);
        let mut created = std::mem::take(&mut self.createds);
        let mut categories = std::mem::take(&mut self.categories);
        prices.clear();
        prices.resize(docs.len(), None);
        self.price.first_vals(docs, &mut prices);
        // Only the matches in the price range go on to the other columns.
        kept.clear();
        let mut kept_prices = Vec::with_capacity(docs.len());
        for (doc, price) in docs.iter().zip(&prices) {
            let price = price.unwrap_or(0);
            if self.prices_wanted.contains(&price) {
                kept.push(*doc);
                kept_prices.push(price);
            }
        }
        let n = kept.len();
        created.clear();
        created.resize(n, None);
        categories.clear();
        categories.resize(n, None);
        self.created.first_vals(&kept, &mut created);
        if let Some(c) = &self.category {
            c.ords().first_vals(&kept, &mut categories);
        }
        for i in 0..n {
            self.collect_one(
                kept[i],
                0.0,
                kept_prices[i],
                created[i].unwrap_or(0),
                categories[i],
            );
        }
        self.prices = prices;
        self.kept = kept;
        self.createds = created;
        self.categories = categories;
    }

    fn harvest(mut self) -> PageFruit {
        if let Some(c) = &self.category {
            let mut name = String::new();
            for (ord, n) in self.category_counts.iter().enumerate() {
                if *n > 0 && c.ord_to_str(ord as u64, &mut name).unwrap_or(false) {
                    self.fruit.categories.insert(name.clone(), *n);
                }
            }
        }
        self.fruit
    }
}

/// Catalog search for one engine process: the live index generation, kept current from the
/// feed by [`CatalogSearch::follow`], replaceable by [`CatalogSearch::rebuild`].
pub struct CatalogSearch {
    live: RwLock<Arc<Generation>>,
    /// Held while applying events, so a rebuild's swap sees the live position stand still.
    applying: tokio::sync::Mutex<()>,
    dir: Option<PathBuf>,
    ready: AtomicBool,
    /// 1 for the index opened at start, one more per rebuild swapped in.
    generation: AtomicI64,
    rebuilding: AtomicBool,
    /// How far the generation being rebuilt has read the feed.
    rebuilt_to: AtomicI64,
}

impl CatalogSearch {
    /// An index in memory (`dir` None), or in `dir`, continuing from its last commit.
    pub fn open(dir: Option<PathBuf>) -> Result<Arc<CatalogSearch>> {
        let mut number = 1;
        let live = match &dir {
            Some(d) => {
                number = live_number(d);
                Generation::open(Some(&d.join(format!("g{number}"))))?
            }
            None => Generation::open(None)?,
        };
        Ok(Arc::new(CatalogSearch {
            live: RwLock::new(Arc::new(live)),
            applying: tokio::sync::Mutex::new(()),
            dir,
            ready: AtomicBool::new(false),
            generation: AtomicI64::new(number as i64),
            rebuilding: AtomicBool::new(false),
            rebuilt_to: AtomicI64::new(0),
        }))
    }

    fn live(&self) -> Arc<Generation> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Which index generation serves (see [`CatalogSearch::rebuild`]).
    pub fn generation(&self) -> i64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether a rebuild is under way.
    pub fn is_rebuilding(&self) -> bool {
        self.rebuilding.load(Ordering::Acquire)
    }

    /// While a rebuild is under way, the feed position its new generation has reached.
    pub fn rebuild_position(&self) -> Option<i64> {
        self.is_rebuilding()
            .then(|| self.rebuilt_to.load(Ordering::Acquire))
    }

    /// Starts [`CatalogSearch::rebuild`] in the background unless one is running; returns
    /// whether it started.
    pub fn start_rebuild(self: &Arc<Self>, store: Store) -> bool {
        if self.rebuilding.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.rebuilt_to.store(0, Ordering::Release);
        let me = self.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let progress = |done: i64, _head: i64| me.rebuilt_to.store(done, Ordering::Release);
            match me.rebuild(&store, progress).await {
                Ok(position) => tracing::info!(
                    position,
                    generation = me.generation(),
                    secs = started.elapsed().as_secs_f64(),
                    "search index rebuilt and swapped in"
                ),
                Err(e) => tracing::error!(error = %e, "search index rebuild failed"),
            }
            me.rebuilding.store(false, Ordering::Release);
        });
        true
    }

    /// The feed position the live index covers.
    pub fn position(&self) -> i64 {
        self.live().position()
    }

    /// Whether the index has caught up with the feed as it was when following began.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Searches the live index (blocking: call it off the async executor).
    pub fn search(&self, q: &SearchQuery) -> Result<SearchResults> {
        self.live().search(q)
    }

    /// Applies the next events of the feed to the live index and commits them; returns how
    /// many it read.
    pub async fn step(&self, store: &Store) -> Result<usize> {
        let _applying = self.applying.lock().await;
        apply_next(store, self.live(), true).await
    }

    /// As [`CatalogSearch::step`], but stock-count-only changes may wait (see
    /// [`COUNTS_EVERY`]), and held changes that are due are committed.
    async fn step_following(&self, store: &Store) -> Result<usize> {
        let _applying = self.applying.lock().await;
        apply_next(store, self.live(), false).await
    }

    /// Commits the live index has made since it was opened or swapped in.
    pub fn commits(&self) -> u64 {
        self.live().commits.load(Ordering::Relaxed)
    }

    /// Follows the feed until `shutdown` resolves, committing at most every 20 ms.
    pub async fn follow(
        self: Arc<Self>,
        store: Store,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut start_head = None;
        let mut last_commit = Instant::now();
        loop {
            if start_head.is_none() {
                start_head = store.feed().head().await.ok();
            }
            // Watched before the step reads, so an append during the read wakes the wait.
            let appended = store.feed().watch_appends();
            let began = Instant::now();
            let (wait, idle) = match self.step_following(&store).await {
                Ok(n) => {
                    if n > 0 {
                        last_commit = began;
                    }
                    if start_head.is_some_and(|h| self.position() >= h) {
                        self.ready.store(true, Ordering::Release);
                    }
                    metrics::gauge!("emporium_projection_position", "projection" => "search")
                        .set(self.position() as f64);
                    if n as i64 >= BATCH {
                        (Duration::ZERO, false)
                    } else if n == 0 {
                        (IDLE_POLL, true)
                    } else {
                        (COMMIT_EVERY.saturating_sub(began.elapsed()), false)
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "search index step failed");
                    (Duration::from_secs(1), false)
                }
            };
            if wait.is_zero() {
                continue;
            }
            let woken = tokio::select! {
                () = &mut shutdown => return,
                () = appended, if idle => true,
                () = tokio::time::sleep(wait) => false,
            };
            if woken {
                // Still at most one commit per COMMIT_EVERY.
                let early = COMMIT_EVERY.saturating_sub(last_commit.elapsed());
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(early) => {}
                }
            }
        }
    }

    /// Builds a new index from the whole feed while the live one serves, then swaps it in.
    /// `progress(done, head)` is called after each batch. Returns the new index's position.
    pub async fn rebuild(&self, store: &Store, mut progress: impl FnMut(i64, i64)) -> Result<i64> {
        let number = self.generation() as u64 + 1;
        let dir = self.dir.as_ref().map(|d| {
            let dir = d.join(format!("g{number}"));
            let _ = std::fs::remove_dir_all(&dir);
            dir
        });
        let fresh = Arc::new(Generation::open(dir.as_deref())?);
        loop {
            let head = store.feed().head().await?;
            if apply_next(store, fresh.clone(), true).await? == 0 {
                break;
            }
            progress(fresh.position(), head.max(fresh.position()));
        }
        // The swap: with the follower paused, catch up past the live index, then switch.
        let _applying = self.applying.lock().await;
        let target = self.live().position();
        while fresh.position() < target {
            if apply_next(store, fresh.clone(), true).await? == 0 {
                break;
            }
        }
        let old = {
            let mut live = self
                .live
                .write()
                .map_err(|_| search_error("search index lock poisoned"))?;
            std::mem::replace(&mut *live, fresh.clone())
        };
        self.generation.store(number as i64, Ordering::Release);
        if let Some(d) = &self.dir {
            let tmp = d.join("LIVE.tmp");
            std::fs::write(&tmp, number.to_string()).map_err(search_error)?;
            std::fs::rename(&tmp, d.join("LIVE")).map_err(search_error)?;
            // The old generation's files go once no search holds it.
            let old_dir = d.join(format!("g{}", number - 1));
            drop(old);
            let _ = std::fs::remove_dir_all(old_dir);
        }
        progress(fresh.position(), fresh.position());
        Ok(fresh.position())
    }
}

/// Reads the events after `generation`'s read position and applies them (off the
/// executor), committing them when `force`; returns how many there were. With nothing new,
/// commits held changes that are due.
async fn apply_next(store: &Store, generation: Arc<Generation>, force: bool) -> Result<usize> {
    let from = generation.read_position()?;
    // Only product and stock events change documents; the rest of a big log (orders,
    // payments, checkouts) is stepped over in the database.
    let (events, covered) = store
        .feed()
        .read_events_of(
            from,
            SKIP_WINDOW,
            BATCH,
            &[emporium_domain::Product::TYPE, StockItem::TYPE],
        )
        .await?;
    if covered > from {
        tokio::task::spawn_blocking(move || generation.apply(&events, covered, force))
            .await
            .map_err(search_error)??;
    } else if generation.pending()?.due() {
        tokio::task::spawn_blocking(move || generation.flush_due())
            .await
            .map_err(search_error)??;
    }
    Ok((covered - from).max(0) as usize)
}

/// The generation a directory's `LIVE` file names (1 when there is none).
fn live_number(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("LIVE"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use emporium_domain::values::{
        Category, Currency, Description, Money, Quantity, Sku, Title, WarehouseId,
    };
    use emporium_domain::{Event, ProductEvent, StockItemEvent};
    use emporium_event_store::{Envelope, EventMetadata};

    use super::{Generation, SearchQuery, COUNTS_EVERY};

    fn envelope(position: i64, payload: Event) -> Envelope<Event> {
        Envelope {
            position,
            event_id: uuid::Uuid::new_v4(),
            aggregate_type: "StockItem".into(),
            aggregate_id: "wh-1:HOT-1".into(),
            sequence: position,
            event_type: "StockItemEvent".into(),
            event_version: "1.0".into(),
            payload,
            metadata: EventMetadata::system("test"),
            recorded_at: chrono::Utc::now(),
        }
    }

    /// Stock at wh-1 with `available` units left.
    fn stock(position: i64, available: u64) -> Envelope<Event> {
        envelope(
            position,
            Event::StockItem(StockItemEvent::StockReceived {
                warehouse_id: WarehouseId::parse("wh-1").unwrap(),
                sku: Sku::parse("HOT-1").unwrap(),
                qty: Quantity::new(1).unwrap(),
                on_hand: 10,
                reserved: 10 - available,
                available,
            }),
        )
    }

    /// (commits, committed position, read position, available as searches see it).
    fn seen(g: &Generation) -> (u64, i64, i64, i64) {
        let r = g
            .search(&SearchQuery {
                q: "HOT-1".into(),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        (
            g.commits.load(std::sync::atomic::Ordering::Relaxed),
            g.position(),
            g.read_position().unwrap(),
            r.items.first().map_or(-1, |i| i.available),
        )
    }

    #[test]
    fn stock_counts_wait_and_in_stock_flips_commit_at_once() {
        let g = Generation::open(None).unwrap();
        let created = envelope(
            1,
            Event::Product(ProductEvent::ProductCreated {
                sku: Sku::parse("HOT-1").unwrap(),
                title: Title::parse("Hot item").unwrap(),
                description: Description::parse("x").unwrap(),
                category: Category::parse("home").unwrap(),
                price: Money::new(999, Currency::parse("EUR").unwrap()).unwrap(),
                merchant_id: None,
            }),
        );
        g.apply(&[created], 1, false).unwrap();
        assert_eq!(seen(&g), (1, 1, 1, 0));
        // A warehouse's first stock is a change of what filters match: at once.
        g.apply(&[stock(2, 5)], 2, false).unwrap();
        assert_eq!(seen(&g), (2, 2, 2, 5));
        // Counts alone wait, and the position does not claim them.
        g.apply(&[stock(3, 4)], 3, false).unwrap();
        g.apply(&[stock(4, 3)], 4, false).unwrap();
        g.apply(&[], 6, false).unwrap();
        assert_eq!(seen(&g), (2, 2, 6, 5));
        g.flush_due().unwrap();
        assert_eq!(seen(&g), (2, 2, 6, 5), "not due yet");
        std::thread::sleep(COUNTS_EVERY);
        g.flush_due().unwrap();
        assert_eq!(
            seen(&g),
            (3, 6, 6, 3),
            "due: all held changes in one commit"
        );
        // Selling out at wh-1 takes the item out of in-stock results: at once.
        g.apply(&[stock(7, 2)], 7, false).unwrap();
        g.apply(&[stock(8, 0)], 8, false).unwrap();
        assert_eq!(seen(&g), (4, 8, 8, 0));
        // Back in stock, then a count: the flip commits, the count waits until forced.
        g.apply(&[stock(9, 2), stock(10, 1)], 10, false).unwrap();
        assert_eq!(seen(&g), (5, 10, 10, 1));
        g.apply(&[stock(11, 2)], 11, false).unwrap();
        assert_eq!(seen(&g), (5, 10, 11, 1));
        g.apply(&[], 12, true).unwrap();
        assert_eq!(seen(&g), (6, 12, 12, 2));
        // Events at or before the read position are not applied twice.
        g.apply(&[stock(12, 7)], 12, true).unwrap();
        assert_eq!(seen(&g), (6, 12, 12, 2));
    }
}
