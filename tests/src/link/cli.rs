//! The standalone runner, mounted by the `meridian` binary as `meridian link`.

use std::net::SocketAddr;
use std::str::FromStr;

use super::{LinkEmulator, LinkError, LinkSpec, seed_from_time};

/// Command-line arguments of the link runner. Every link gets the same spec;
/// change individual links later through the control API.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// A directed link: region FROM reaches region TO by connecting to
    /// LISTEN, which forwards to UPSTREAM (TO's peer listener). Repeatable.
    #[arg(
        long = "link",
        value_name = "FROM:TO=LISTEN->UPSTREAM",
        required = true
    )]
    pub links: Vec<LinkArg>,
    /// One-way latency of every link, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub latency: u64,
    /// Jitter of every link: each chunk's delay varies by up to ±MS.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub jitter: u64,
    /// Probability (0..=1) that a chunk is delayed as if retransmitted.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub loss: f64,
    /// Extra delay of a lost chunk, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    pub loss_delay: u64,
    /// Probability (0..=1) per chunk that the connection is reset.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub close: f64,
    /// Bandwidth cap per link and direction in bytes per second (0: none).
    #[arg(long, value_name = "BYTES_PER_SEC", default_value_t = 0)]
    pub bandwidth: u64,
    /// Serve the HTTP control API here (e.g. 127.0.0.1:7900).
    #[arg(long, value_name = "ADDR")]
    pub control: Option<SocketAddr>,
    /// Seed of the jitter/loss/reset draws; taken from the clock if absent.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

impl LinkArgs {
    /// The spec every link starts with.
    pub fn spec(&self) -> LinkSpec {
        LinkSpec {
            latency_ms: self.latency,
            jitter_ms: self.jitter,
            loss: self.loss,
            loss_delay_ms: self.loss_delay,
            close: self.close,
            bandwidth_bytes_per_sec: self.bandwidth,
            partitioned: false,
        }
    }
}

/// One `--link FROM:TO=LISTEN->UPSTREAM` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkArg {
    /// The connecting region.
    pub from: String,
    /// The region connected to.
    pub to: String,
    /// Where the link listens (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Where the link forwards.
    pub upstream: SocketAddr,
}

impl FromStr for LinkArg {
    type Err = LinkError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| LinkError::BadLinkArg {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        // Split on '=' first: addresses may hold ':' (IPv6) but never '='.
        let (regions, addrs) = value.split_once('=').ok_or_else(|| bad("missing '='"))?;
        let (from, to) = regions
            .split_once(':')
            .ok_or_else(|| bad("missing ':' between FROM and TO"))?;
        let (listen, upstream) = addrs
            .split_once("->")
            .ok_or_else(|| bad("missing '->' between LISTEN and UPSTREAM"))?;
        let listen = listen
            .trim()
            .parse()
            .map_err(|_| bad("LISTEN is not an IP:PORT address"))?;
        let upstream = upstream
            .trim()
            .parse()
            .map_err(|_| bad("UPSTREAM is not an IP:PORT address"))?;
        Ok(LinkArg {
            from: from.trim().to_owned(),
            to: to.trim().to_owned(),
            listen,
            upstream,
        })
    }
}

/// A started runner: the emulator and, if asked for, the control address.
#[derive(Debug)]
pub struct Started {
    /// The emulator holding every link of the arguments.
    pub emulator: LinkEmulator,
    /// The control API's bound address, when `--control` was given.
    pub control: Option<SocketAddr>,
}

/// Validates the arguments, binds every link and the control API. On any
/// error everything already started is shut down before returning it.
pub async fn start(args: &LinkArgs) -> Result<Started, LinkError> {
    let spec = args.spec();
    spec.validate()?;
    let emulator = LinkEmulator::new(args.seed.unwrap_or_else(seed_from_time));
    match bind_all(&emulator, args, spec).await {
        Ok(control) => Ok(Started { emulator, control }),
        Err(err) => {
            emulator.shutdown().await;
            Err(err)
        }
    }
}

async fn bind_all(
    emulator: &LinkEmulator,
    args: &LinkArgs,
    spec: LinkSpec,
) -> Result<Option<SocketAddr>, LinkError> {
    for link in &args.links {
        emulator
            .add_link_on(&link.from, &link.to, link.listen, link.upstream, spec)
            .await?;
    }
    match args.control {
        Some(addr) => Ok(Some(emulator.serve_control(addr).await?)),
        None => Ok(None),
    }
}

/// Runs the links until `shutdown` resolves, then stops them all.
///
/// Prints the seed, each link's listen address and the control address to
/// stdout first, one per line, so scripts can pick up ports chosen by the OS.
pub async fn run(args: LinkArgs, shutdown: impl Future<Output = ()>) -> Result<(), LinkError> {
    let Started { emulator, control } = start(&args).await?;
    println!("seed {}", emulator.seed());
    for link in emulator.links() {
        println!(
            "link {} -> {} listening on {} (upstream {})",
            link.from, link.to, link.listen, link.upstream
        );
    }
    if let Some(addr) = control {
        println!("control API on http://{addr}");
    }
    shutdown.await;
    emulator.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: LinkArgs,
    }

    #[test]
    fn link_argument_parses() {
        let arg: LinkArg = "us-east:eu-west=127.0.0.1:0->[::1]:7002".parse().unwrap();
        assert_eq!(arg.from, "us-east");
        assert_eq!(arg.to, "eu-west");
        assert_eq!(arg.listen, "127.0.0.1:0".parse().unwrap());
        assert_eq!(arg.upstream, "[::1]:7002".parse().unwrap());
    }

    #[test]
    fn bad_link_arguments_say_what_is_missing() {
        for (value, missing) in [
            ("us-east:eu-west", "'='"),
            ("us-east=1.2.3.4:1->1.2.3.4:2", "':'"),
            ("a:b=127.0.0.1:1", "'->'"),
            ("a:b=nowhere->127.0.0.1:1", "LISTEN"),
        ] {
            let err = value.parse::<LinkArg>().unwrap_err().to_string();
            assert!(err.contains(missing), "{value}: {err}");
        }
    }

    #[test]
    fn flags_build_the_spec() {
        let cli = Cli::try_parse_from([
            "link",
            "--link",
            "a:b=127.0.0.1:0->127.0.0.1:9",
            "--link",
            "b:a=127.0.0.1:0->127.0.0.1:8",
            "--latency",
            "40",
            "--jitter",
            "5",
            "--seed",
            "7",
        ])
        .unwrap();
        assert_eq!(cli.args.links.len(), 2);
        assert_eq!(cli.args.spec(), LinkSpec::latency(40).with_jitter(5));
        assert_eq!(cli.args.seed, Some(7));
        assert!(Cli::try_parse_from(["link", "--latency", "4"]).is_err());
        assert!(Cli::try_parse_from(["link", "--link", "nonsense"]).is_err());
    }
}
