use clap::{Args, Parser, Subcommand};
use rootkey_operator::script::{ScriptParams, az_script};

// jemalloc, configured in .cargo/config.toml to hand freed pages back within a second: glibc's
// malloc kept a rollout's freed backlog resident (9–14 MiB more at 10,000 objects, bench/), and
// the musl image runs the same allocator as the benchmarked build.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Kubernetes operator that hands an Azure Managed HSM key to Antimatter as a root encryption key.
#[derive(Parser)]
#[command(name = "rootkey-operator", version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator.
    Run(Box<rootkey_operator::run::RunArgs>),
    /// Print the AzureRootKey CustomResourceDefinition as YAML.
    Crd,
    /// Print the Azure CLI script of the product page's manual flow, for one HSM key and domain.
    Script(ScriptArgs),
    /// Print the version.
    Version,
    /// Rewrite the generated tables of a docs/reference.md in place (`make generate`).
    #[command(hide = true)]
    ReferenceTables { path: std::path::PathBuf },
}

#[derive(Args)]
struct ScriptArgs {
    /// Managed HSM name.
    #[arg(long)]
    hsm_name: String,
    /// Key name in the HSM.
    #[arg(long)]
    key_name: String,
    /// Antimatter domain ID (dm-…).
    #[arg(long)]
    domain_id: String,
    /// Application (client) ID of Antimatter's multi-tenant Azure application.
    #[arg(long)]
    application_id: String,
    /// Do not create the key when it is missing.
    #[arg(long)]
    no_create: bool,
    /// Key size in bits when creating it.
    #[arg(long, default_value_t = 256, value_parser = key_size)]
    key_size: u16,
}

fn key_size(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(bits @ (128 | 192 | 256)) => Ok(bits),
        _ => Err("must be 128, 192 or 256".to_owned()),
    }
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        // Blocking threads resolve host names for new connections; a burst of reconciles would
        // otherwise start hundreds, each with its own stack and malloc arena.
        Command::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .max_blocking_threads(16)
            .build()?
            .block_on(rootkey_operator::run::run(*args))?,
        Command::Crd => print!("{}", rootkey_operator::crd::crd_yaml()?),
        Command::Script(a) => print!(
            "{}",
            az_script(&ScriptParams {
                hsm_name: a.hsm_name,
                key_name: a.key_name,
                domain_id: a.domain_id,
                application_id: a.application_id,
                create_key: !a.no_create,
                key_size: a.key_size,
            })
        ),
        Command::Version => println!("rootkey-operator {}", env!("CARGO_PKG_VERSION")),
        Command::ReferenceTables { path } => {
            let doc = std::fs::read_to_string(&path)?;
            std::fs::write(&path, rootkey_operator::reference::update(&doc)?)?;
        }
    }
    Ok(())
}
