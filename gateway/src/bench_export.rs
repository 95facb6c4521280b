//! `emporium bench export`: see the module written for the export issue.
pub async fn run(_args: ExportBenchArgs) -> anyhow::Result<()> { Ok(()) }
#[derive(Debug, clap::Args)]
pub struct ExportBenchArgs {}
