//! The `casewatch` command line: the arguments (this file) and one function per subcommand
//! (`commands`).
//!
//! Each subcommand loads configuration, calls into the library and prints; closed sets of
//! values are clap `ValueEnum`s and instants are parsed once, by clap. No business rule lives
//! here: the service is `crate::pipeline::service`, replays are [`crate::replay`] and
//! `crate::pipeline::replay`.

mod commands;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::core::calendar::{DayUnit, Instant};

/// Electronic-supervision event-stream processor for government service centres.
#[derive(Debug, Parser)]
#[command(name = "casewatch", version, about)]
pub struct Cli {
    /// Configuration file layered over the embedded defaults.
    #[arg(long, global = true, env = "CASEWATCH_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// `casewatch alerts ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum AlertsCommand {
    /// Send a sample alert to one webhook (retries included) and record the attempts.
    Test {
        /// The webhook's name in alerts.webhooks.
        #[arg(long)]
        webhook: String,
    },
}

/// `casewatch console …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ConsoleCommand {
    /// Print the argon2id hash of a password read from standard input (for [[console.users]]).
    HashPassword,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print the effective configuration (secrets masked); fail on an invalid one.
    CheckConfig,
    /// Check an NDJSON file against wire format v1; exit 1 if any line is invalid.
    Validate {
        /// The NDJSON file.
        file: PathBuf,
        /// Also apply the valid lines in file order, as `replay` does (with the configuration's
        /// calendars and levels), and report the supervision actions that do not fit their
        /// case (`invalid_action`).
        #[arg(long)]
        actions: bool,
    },
    /// Run an NDJSON file through the engine on the event clock and write CSV outputs.
    Replay {
        /// The NDJSON file.
        file: PathBuf,
        /// Engine time at end of input (RFC 3339); default: the largest occurred_at.
        #[arg(long, value_parser = instant)]
        as_of: Option<Instant>,
        /// Output directory for cases.csv, window_daily.csv, anomalies.csv, dead_letters.csv,
        /// window_monthly.csv (the `csv` sink).
        #[arg(long, required_if_eq("sink", "csv"))]
        out: Option<PathBuf>,
        /// Where the outputs go.
        #[arg(long, value_enum, default_value_t = Sink::Csv)]
        sink: Sink,
    },
    /// Create the ClickHouse database and apply schema migrations (idempotent).
    Migrate {
        /// Create the schema on every server of this cluster (of the servers' `remote_servers`):
        /// replicated local tables and distributed ones over them. Default: `clickhouse.cluster`.
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Consume the events topic and keep ClickHouse up to date (the service).
    Run {
        /// Stop once no message arrived for this many seconds (demos, benchmarks, tests).
        #[arg(long)]
        exit_when_idle: Option<f64>,
    },
    /// Webhook alerts.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Serve the supervision console (pages over ClickHouse, behind a login).
    Serve,
    /// Console users.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Benchmark helper: read a topic with a consumer that only counts (the broker's limit).
    DrainCount {
        /// The topic (default: kafka.topic).
        #[arg(long)]
        topic: Option<String>,
        /// Stop after this many messages (default: the topic's size now).
        #[arg(long, default_value_t = 0)]
        expected: i64,
    },
    /// Benchmark helper: store each message's payload in a plain MergeTree table, nothing else
    /// (the raw-store baseline of scripts/bench-e2e).
    RawStore {
        /// The topic (default: kafka.topic).
        #[arg(long)]
        topic: Option<String>,
        /// Stop after this many messages (default: the topic's size now).
        #[arg(long, default_value_t = 0)]
        expected: i64,
    },
    /// Write the monthly bulletin or quarterly report (Markdown, HTML, ranking CSV).
    Bulletin {
        /// YYYY-MM (a month), YYYY-Qn (a quarter), last-month or last-quarter (in the
        /// centre's timezone).
        #[arg(long)]
        period: String,
        /// Only this centre (default: every centre in the database).
        #[arg(long)]
        center: Option<String>,
        /// The bulletin's language.
        #[arg(long, value_enum, default_value_t = Lang::Zh)]
        lang: Lang,
        /// Directory of the output files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Check in ClickHouse that window_daily equals what cases and anomalies imply.
    Verify {
        /// First day (YYYY-MM-DD, centre-local).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last day, inclusive.
        #[arg(long)]
        to: chrono::NaiveDate,
    },
    /// Working-calendar questions: deadlines and working time of a centre.
    #[command(subcommand)]
    Calendar(CalendarCommand),
    /// Generate a realistic, reproducible event stream.
    Simulate {
        /// Centre profile.
        #[arg(long, value_enum, default_value_t = ProfileName::County)]
        profile: ProfileName,
        #[command(flatten)]
        stream: SimArgs,
        /// Write NDJSON here (default: standard output).
        #[arg(long, conflicts_with = "kafka")]
        out: Option<PathBuf>,
        /// Produce to this Kafka topic instead (key = case_id), creating it when missing.
        #[arg(long)]
        kafka: Option<String>,
        /// Partitions of a topic created by --kafka.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
        /// With --kafka: produce even when the topic already holds messages (a rerun of the
        /// demo does not; a benchmark adding new events does).
        #[arg(long, requires = "kafka")]
        append: bool,
    },
}

/// `casewatch calendar …`.
#[derive(Debug, Subcommand)]
pub(crate) enum CalendarCommand {
    /// The instant at which N days have elapsed from an instant (a promised deadline).
    Deadline {
        /// Start instant (RFC 3339 with offset), e.g. the acceptance.
        #[arg(long, value_parser = instant)]
        from: Instant,
        /// Days to add.
        #[arg(long)]
        days: i64,
        /// How the days count.
        #[arg(long, value_enum, default_value_t = Unit::Working)]
        unit: Unit,
        /// Centre whose calendar applies (default: the default calendar).
        #[arg(long, default_value = "")]
        center: String,
    },
    /// Working time between two instants, in seconds and days.
    WorkingTime {
        #[arg(long, value_parser = instant)]
        from: Instant,
        #[arg(long, value_parser = instant)]
        to: Instant,
        #[arg(long, value_enum, default_value_t = Unit::Working)]
        unit: Unit,
        #[arg(long, default_value = "")]
        center: String,
    },
    /// Read the State Council's holiday notice (plain text, as pasted from the government
    /// website), print the year's days and write that year's holiday-cn file into
    /// calendar.holidays_dir (atomically). A text it cannot read completely: exit 2, the
    /// offending line quoted, nothing written.
    Import {
        /// The notice as a UTF-8 text file.
        file: PathBuf,
        /// Read, check and print; write nothing.
        #[arg(long)]
        dry_run: bool,
        /// The notice's address, recorded in the file's `papers` (repeatable).
        #[arg(long = "paper")]
        papers: Vec<String>,
    },
    /// The years with holiday data per centre, and the open cases (in ClickHouse) whose
    /// deadlines reach beyond them.
    Coverage,
    /// Each day of a date range and whether it is a working day.
    Days {
        /// First date (YYYY-MM-DD).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last date (YYYY-MM-DD), inclusive.
        #[arg(long)]
        to: chrono::NaiveDate,
        #[arg(long, default_value = "")]
        center: String,
    },
}

/// `replay --sink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Sink {
    /// CSV files in `--out`.
    Csv,
    /// The tables of SPEC §5 (resumable).
    Clickhouse,
}

/// `bulletin --lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Lang {
    Zh,
    En,
}

impl From<Lang> for crate::bulletin::render::Lang {
    fn from(lang: Lang) -> Self {
        match lang {
            Lang::Zh => Self::Zh,
            Lang::En => Self::En,
        }
    }
}

/// The stream `simulate` generates.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct SimArgs {
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// First day (YYYY-MM-DD).
    #[arg(long, default_value = "2014-01-01")]
    start: chrono::NaiveDate,
    #[arg(long, default_value_t = 12)]
    months: u32,
    /// Scale the case volume (1.0 = the county's ~1,550 cases a month).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Fraction of invalid lines.
    #[arg(long, default_value_t = 0.002)]
    invalid_rate: f64,
    /// Fraction of events delivered twice.
    #[arg(long, default_value_t = 0.002)]
    duplicate_rate: f64,
}

impl From<SimArgs> for crate::simulate::SimOptions {
    fn from(a: SimArgs) -> Self {
        Self {
            seed: a.seed,
            start: a.start,
            months: a.months,
            scale: a.scale,
            invalid_rate: a.invalid_rate,
            duplicate_rate: a.duplicate_rate,
        }
    }
}

/// `calendar --unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Unit {
    /// Only working days count.
    Working,
    /// Every day counts.
    Calendar,
}

impl From<Unit> for DayUnit {
    fn from(unit: Unit) -> Self {
        match unit {
            Unit::Working => DayUnit::Working,
            Unit::Calendar => DayUnit::Calendar,
        }
    }
}

/// `simulate --profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProfileName {
    /// The seed county: 22 windows, 330 items, ~1,550 cases a month.
    County,
    /// A province: 100 centres with their own windows and departments, ~165,000 cases a
    /// month (`--scale` shrinks it), four of them at UTC+6 (see `config/province.toml`).
    Province,
}

/// An RFC 3339 timestamp with offset, as an instant.
fn instant(s: &str) -> Result<Instant, String> {
    crate::core::event::parse_timestamp(s)
        .ok_or_else(|| format!("{s:?} is not an RFC 3339 timestamp with offset"))
}

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    use commands::*;
    let config = || Config::load_from_process(cli.config.as_deref());
    match cli.command {
        Command::CheckConfig => check_config(&config()?),
        Command::Validate { file, actions } => {
            let engine = if actions {
                Some(config()?.new_engine()?)
            } else {
                None
            };
            validate(&file, engine)
        }
        Command::Replay {
            file,
            as_of,
            out,
            sink,
        } => replay(&config()?, &file, as_of, sink, out.as_deref()),
        Command::Migrate { cluster } => migrate(&config()?, cluster.as_deref()),
        Command::Run { exit_when_idle } => run_service(&config()?, exit_when_idle),
        Command::Alerts(AlertsCommand::Test { webhook }) => alerts_test(config()?, &webhook),
        Command::Serve => serve(&config()?),
        Command::Console(ConsoleCommand::HashPassword) => hash_password(),
        Command::DrainCount { topic, expected } => drain_count(&config()?, topic, expected),
        Command::RawStore { topic, expected } => raw_store(&config()?, topic, expected),
        Command::Bulletin {
            period,
            center,
            lang,
            out,
        } => bulletin(&config()?, &period, center.as_deref(), lang.into(), &out),
        Command::Verify { from, to } => verify(&config()?, from, to),
        Command::Calendar(cmd) => calendar(&config()?, &cmd),
        Command::Simulate {
            profile,
            stream,
            out,
            kafka,
            partitions,
            append,
        } => {
            let target = match kafka {
                Some(topic) => SimTarget::Kafka(Box::new(config()?), topic, partitions, append),
                None => SimTarget::File(out),
            };
            simulate(profile, &stream.into(), target)
        }
    }
}
