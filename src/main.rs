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
    /// Show an AzureRootKey's conditions, what to do about each failing one, and its recent events.
    Status {
        /// The object, as NAMESPACE/NAME.
        #[arg(value_parser = rootkey_operator::cli::parse_object)]
        object: (String, String),
    },
    /// Make the operator check an AzureRootKey now (sets the antimatter.io/recheck annotation).
    Recheck {
        /// The object, as NAMESPACE/NAME.
        #[arg(value_parser = rootkey_operator::cli::parse_object)]
        object: (String, String),
    },
    /// Check this installation, as the operator: the CRD, its RBAC, its Azure token and HSM roles,
    /// and the Antimatter API allowlist (one PASS/FAIL line each; exits non-zero on a failure).
    Check(Box<rootkey_operator::check::CheckArgs>),
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

/// Runs one request-and-answer command against the cluster `KUBECONFIG` (or the pod) names.
fn kube_command<F, Fut>(command: F) -> anyhow::Result<String>
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
        let client = rootkey_operator::apiserver::client().await?;
        command(client).await
    })
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
        Command::Status { object: (ns, name) } => {
            print!("{}", kube_command(|c| rootkey_operator::cli::status(c, &ns, &name))?)
        }
        Command::Recheck { object: (ns, name) } => {
            let at = kube_command(|c| rootkey_operator::cli::recheck(c, &ns, &name))?;
            println!(
                "asked the operator to check {ns}/{name} now ({} = {at})",
                rootkey_operator::cli::RECHECK_ANNOTATION
            );
        }
        Command::Check(args) => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let findings = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(rootkey_operator::check::run(&args))?;
            rootkey_operator::check::report(&findings)?;
        }
        Command::Version => println!("rootkey-operator {}", env!("CARGO_PKG_VERSION")),
        Command::ReferenceTables { path } => {
            let doc = std::fs::read_to_string(&path)?;
            std::fs::write(&path, rootkey_operator::reference::update(&doc)?)?;
        }
    }
    Ok(())
}
