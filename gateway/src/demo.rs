//! `serve --demo`: seeds three warehouses in different regions, three merchants, 50 products
//! in five categories with stock, and two promotion codes, through the same commands an
//! operator would send. Runs only on an
//! empty store, so restarting with `--demo` never duplicates anything.

use anyhow::{anyhow, Context};
use emporium_domain::inventory::{stock_item_id, StockItem, StockItemCommand};
use emporium_domain::merchant::{Merchant, MerchantCommand};
use emporium_domain::product::{Product, ProductCommand};
use emporium_domain::promotion::{Benefit, Promotion, PromotionCommand, PromotionTerms, Scope};
use emporium_domain::values::{
    Category, Currency, Description, MerchantId, Money, Priority, PromoCode, Quantity, Region, Sku,
    Title, WarehouseId, WarehouseName,
};
use emporium_domain::warehouse::{Warehouse, WarehouseCommand};
use emporium_event_store::{EventMetadata, Store};
use indicatif::{ProgressBar, ProgressStyle};

const WAREHOUSES: [(&str, &str, &str, i64); 3] = [
    ("wh-dublin", "Dublin fulfilment centre", "eu-west", 10),
    ("wh-virginia", "Virginia fulfilment centre", "us-east", 20),
    (
        "wh-singapore",
        "Singapore fulfilment centre",
        "ap-southeast",
        30,
    ),
];

const CATALOG: [(&str, [&str; 10]); 5] = [
    (
        "audio",
        [
            "Wireless Headphones",
            "Noise Cancelling Earbuds",
            "Bluetooth Speaker",
            "Studio Monitor Headphones",
            "Portable Radio",
            "Soundbar",
            "Turntable",
            "USB Microphone",
            "Headphone Amplifier",
            "Smart Speaker",
        ],
    ),
    (
        "computing",
        [
            "Mechanical Keyboard",
            "Wireless Mouse",
            "USB-C Hub",
            "27 inch Monitor",
            "Laptop Stand",
            "External SSD 1TB",
            "Webcam HD",
            "Docking Station",
            "Ergonomic Chair",
            "Desk Lamp",
        ],
    ),
    (
        "kitchen",
        [
            "Espresso Machine",
            "Chef Knife",
            "Cast Iron Skillet",
            "Electric Kettle",
            "Blender",
            "Toaster",
            "Coffee Grinder",
            "Rice Cooker",
            "Food Scale",
            "Stand Mixer",
        ],
    ),
    (
        "outdoor",
        [
            "Hiking Backpack",
            "Camping Tent",
            "Sleeping Bag",
            "Trekking Poles",
            "Headlamp",
            "Water Filter",
            "Camping Stove",
            "Folding Chair",
            "Rain Jacket",
            "Insulated Bottle",
        ],
    ),
    (
        "books",
        [
            "Designing Data Intensive Applications",
            "The Rust Programming Language",
            "Domain Driven Design",
            "Release It",
            "Site Reliability Engineering",
            "Database Internals",
            "Programming Rust",
            "Zero To Production",
            "Refactoring",
            "The Pragmatic Programmer",
        ],
    ),
];

/// The demo's merchants and the categories each sells (the rest is the house's).
const MERCHANTS: [(&str, &str, u16, &[&str]); 3] = [
    (
        "acme-audio",
        "Acme Audio & Computing",
        1_200,
        &["audio", "computing"],
    ),
    (
        "greenfield",
        "Greenfield Outdoor & Kitchen",
        1_500,
        &["outdoor", "kitchen"],
    ),
    ("paper-trail", "Paper Trail Books", 800, &[]),
];

/// Seeds demo data if the store holds no events yet. Returns whether it seeded.
pub async fn seed(store: &Store) -> anyhow::Result<bool> {
    if store.event_count().await? > 0 {
        println!("demo: store already has events; not seeding");
        return Ok(false);
    }
    let meta = EventMetadata::system("demo");
    let total = WAREHOUSES.len() + MERCHANTS.len() + CATALOG.len() * 10 * 3 + 2;
    let bar = ProgressBar::new(total as u64).with_style(
        ProgressStyle::with_template("demo {bar:30} {pos}/{len} commands ({per_sec})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let mut warehouse_ids = Vec::new();
    for (id, name, region, priority) in WAREHOUSES {
        let id = WarehouseId::parse(id)?;
        store
            .execute::<Warehouse>(
                id.as_str(),
                WarehouseCommand::RegisterWarehouse {
                    id: id.clone(),
                    name: WarehouseName::parse(name)?,
                    region: Region::parse(region)?,
                    priority: Priority::new(priority)?,
                },
                &meta,
            )
            .await
            .map_err(|e| anyhow!("registering {id}: {e}"))?;
        warehouse_ids.push(id);
        bar.inc(1);
    }

    for (id, name, commission_bps, _) in MERCHANTS {
        store
            .execute::<Merchant>(
                id,
                MerchantCommand::Register {
                    merchant_id: MerchantId::parse(id)?,
                    name: Title::parse(name)?,
                    commission_bps,
                    webhook_url: None,
                },
                &meta,
            )
            .await
            .map_err(|e| anyhow!("registering merchant {id}: {e}"))?;
        bar.inc(1);
    }

    let eur = Currency::parse("EUR")?;
    let mut n: u64 = 0;
    for (category, titles) in CATALOG {
        for title in titles {
            n += 1;
            let sku = Sku::parse(&format!("{}-{:03}", category[..3].to_uppercase(), n))?;
            // Deterministic spread of prices from 4.99 to ~300.
            let price = Money::new(499 + ((n * 7919) % 300) as i64 * 100, eur)?;
            store
                .execute::<Product>(
                    sku.as_str(),
                    ProductCommand::CreateProduct {
                        sku: sku.clone(),
                        title: Title::parse(title)?,
                        description: Description::parse(&format!(
                            "{title}: a demo {category} product."
                        ))?,
                        category: Category::parse(category)?,
                        price,
                        merchant_id: MERCHANTS
                            .iter()
                            .find(|(_, _, _, sells)| sells.contains(&category))
                            .map(|(id, ..)| MerchantId::parse(id))
                            .transpose()?,
                    },
                    &meta,
                )
                .await
                .map_err(|e| anyhow!("creating {sku}: {e}"))?;
            bar.inc(1);
            // Two of three warehouses stock each product; some quantities are small so
            // demo orders can run out.
            for (i, wid) in warehouse_ids.iter().enumerate() {
                if (n as usize + i) % 3 == 2 {
                    bar.inc(1);
                    continue;
                }
                let qty = Quantity::new(((n * 13 + i as u64 * 29) % 40 + 3) as i64)?;
                store
                    .execute::<StockItem>(
                        &stock_item_id(wid, &sku),
                        StockItemCommand::ReceiveStock {
                            warehouse_id: wid.clone(),
                            sku: sku.clone(),
                            qty,
                        },
                        &meta,
                    )
                    .await
                    .map_err(|e| anyhow!("stocking {sku} in {wid}: {e}"))
                    .context("demo stock")?;
                bar.inc(1);
            }
        }
    }
    let codes = [
        (
            "WELCOME10",
            PromotionTerms {
                benefit: Benefit::PercentOff(10),
                min_order: Some(Money::new(2_000, eur)?),
                scope: Scope::default(),
                starts_at_ms: 0,
                ends_at_ms: None,
                max_uses: None,
                max_uses_per_customer: Some(1),
            },
        ),
        (
            "AUDIO5",
            PromotionTerms {
                benefit: Benefit::AmountOff(Money::new(500, eur)?),
                min_order: None,
                // Funded by Acme: its audio products only.
                scope: Scope {
                    skus: vec![],
                    categories: vec![Category::parse("audio")?],
                    merchants: vec![MerchantId::parse("acme-audio")?],
                },
                starts_at_ms: 0,
                ends_at_ms: None,
                max_uses: Some(1_000),
                max_uses_per_customer: None,
            },
        ),
    ];
    for (code, terms) in codes {
        store
            .execute::<Promotion>(
                code,
                PromotionCommand::Create {
                    code: PromoCode::parse(code)?,
                    terms,
                },
                &meta,
            )
            .await
            .map_err(|e| anyhow!("creating promotion {code}: {e}"))?;
        bar.inc(1);
    }
    bar.finish();
    println!(
        "demo: seeded {} warehouses, {} merchants, {n} products with stock, promotion codes WELCOME10 and AUDIO5",
        warehouse_ids.len(),
        MERCHANTS.len()
    );
    Ok(true)
}
