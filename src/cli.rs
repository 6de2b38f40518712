//! The `casewatch` command line: argument parsing and one function per subcommand.
//!
//! Each subcommand loads configuration, calls into the library and maps the outcome to an
//! exit code; no business rule lives here.

use std::io::{BufReader, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{ClockMode, Config};
use crate::core::engine::Engine;
use crate::core::event::parse_timestamp;
use crate::replay::{replay_lines, write_csv_outputs, NdjsonLines};
use crate::simulate::{Profile, SimOptions};

/// Electronic-supervision event-stream processor for government service centres.
#[derive(Debug, Parser)]
#[command(name = "casewatch", version, about)]
pub struct Cli {
    /// Configuration file layered over the embedded defaults.
    #[arg(long, global = true, env = "CASEWATCH_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
/// `casewatch alerts ...`.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Send a sample alert to one webhook (retries included) and record the attempts.
    Test {
        /// The webhook's name in alerts.webhooks.
        #[arg(long)]
        webhook: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the effective configuration (secrets masked); fail on an invalid one.
    CheckConfig,
    /// Check an NDJSON file against wire format v1; exit 1 if any line is invalid.
    Validate {
        /// The NDJSON file.
        file: PathBuf,
    },
    /// Run an NDJSON file through the engine on the event clock and write CSV outputs.
    Replay {
        /// The NDJSON file.
        file: PathBuf,
        /// Engine time at end of input (RFC 3339); default: the largest occurred_at.
        #[arg(long)]
        as_of: Option<String>,
        /// Output directory for cases.csv, window_daily.csv, anomalies.csv, dead_letters.csv,
        /// window_monthly.csv (the `csv` sink).
        #[arg(long, required_if_eq("sink", "csv"))]
        out: Option<PathBuf>,
        /// `csv` (files in --out) or `clickhouse` (the tables of SPEC §5, resumable).
        #[arg(long, default_value = "csv")]
        sink: String,
    },
    /// Create the ClickHouse database and apply schema migrations (idempotent).
    Migrate,
    /// Consume the events topic and keep ClickHouse up to date (the service).
    Run {
        /// Stop once no message arrived for this many seconds (demos, benchmarks, tests).
        #[arg(long)]
        exit_when_idle: Option<f64>,
    },
    /// Webhook alerts.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// Benchmark helper: read a topic with a consumer that only counts (the broker's limit).
    DrainCount {
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
        /// zh (default) or en.
        #[arg(long, default_value = "zh")]
        lang: String,
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
        #[arg(long, default_value = "county")]
        profile: String,
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
        /// Write NDJSON here (default: standard output).
        #[arg(long, conflicts_with = "kafka")]
        out: Option<PathBuf>,
        /// Produce to this Kafka topic instead (key = case_id), creating it when missing.
        #[arg(long)]
        kafka: Option<String>,
        /// Partitions of a topic created by --kafka.
        #[arg(long, default_value_t = 4)]
        partitions: i32,
    },
}

/// `casewatch calendar …`.
#[derive(Debug, Subcommand)]
pub enum CalendarCommand {
    /// The instant at which N days have elapsed from an instant (a promised deadline).
    Deadline {
        /// Start instant (RFC 3339 with offset), e.g. the acceptance.
        #[arg(long)]
        from: String,
        /// Days to add.
        #[arg(long)]
        days: i64,
        /// `working` or `calendar`.
        #[arg(long, default_value = "working")]
        unit: String,
        /// Centre whose calendar applies (default: the default calendar).
        #[arg(long, default_value = "")]
        center: String,
    },
    /// Working time between two instants, in seconds and days.
    WorkingTime {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long, default_value = "working")]
        unit: String,
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

/// Runs the command line; returns the process exit code.
pub fn run(cli: Cli) -> anyhow::Result<i32> {
    let config_path = cli.config.as_deref();
    match cli.command {
        Command::CheckConfig => {
            let cfg = Config::load_from_process(config_path)?;
            print!("{}", cfg.to_masked_toml());
            Ok(0)
        }
        Command::Validate { file } => validate(&file),
        Command::Replay {
            file,
            as_of,
            out,
            sink,
        } => {
            let cfg = Config::load_from_process(config_path)?;
            match (sink.as_str(), out) {
                ("csv", Some(out)) => replay_to_csv(&cfg, &file, as_of.as_deref(), &out),
                ("clickhouse", _) => {
                    runtime()?.block_on(replay_to_clickhouse(&cfg, &file, as_of.as_deref()))
                }
                (other, _) => {
                    anyhow::bail!("--sink must be csv (with --out) or clickhouse, not {other:?}")
                }
            }
        }
        Command::Migrate => {
            let cfg = Config::load_from_process(config_path)?;
            runtime()?.block_on(async {
                let admin = crate::sinks::clickhouse::admin_client(&cfg.clickhouse);
                let applied =
                    crate::sinks::clickhouse::migrate::migrate(&admin, &cfg.clickhouse.database)
                        .await
                        .with_context(|| {
                            format!("cannot migrate ClickHouse at {}", cfg.clickhouse.url)
                        })?;
                if applied.is_empty() {
                    eprintln!("database {} is up to date", cfg.clickhouse.database);
                } else {
                    eprintln!(
                        "database {}: applied migrations {applied:?}",
                        cfg.clickhouse.database
                    );
                }
                Ok(0)
            })
        }
        Command::Run { exit_when_idle } => {
            let cfg = Config::load_from_process(config_path)?;
            run_service(cfg, exit_when_idle)
        }
        Command::Alerts(AlertsCommand::Test { webhook }) => {
            let cfg = Config::load_from_process(config_path)?;
            let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
            let delivered = runtime()?.block_on(crate::alerts::deliver::send_test(
                std::sync::Arc::new(cfg),
                client,
                &webhook,
            ))?;
            println!(
                "{}",
                if delivered {
                    "delivered"
                } else {
                    "not delivered"
                }
            );
            Ok(if delivered { 0 } else { 1 })
        }
        Command::Bulletin {
            period,
            center,
            lang,
            out,
        } => {
            let cfg = Config::load_from_process(config_path)?;
            runtime()?.block_on(bulletin_command(
                &cfg,
                &period,
                center.as_deref(),
                &lang,
                &out,
            ))
        }
        Command::DrainCount { topic, expected } => {
            let cfg = Config::load_from_process(config_path)?;
            let topic = topic.unwrap_or_else(|| cfg.kafka.topic.clone());
            let (count, secs) = crate::pipeline::kafka::drain_count(&cfg, &topic, expected)?;
            println!(
                "{{\"messages\": {count}, \"seconds\": {secs:.3}, \"per_second\": {:.0}}}",
                count as f64 / secs.max(1e-9)
            );
            Ok(0)
        }
        Command::Verify { from, to } => {
            let cfg = Config::load_from_process(config_path)?;
            runtime()?.block_on(crate::verify::verify_command(&cfg, from, to))
        }
        Command::Calendar(cmd) => {
            let cfg = Config::load_from_process(config_path)?;
            calendar_command(&cfg, &cmd)
        }
        Command::Simulate {
            profile,
            seed,
            start,
            months,
            scale,
            invalid_rate,
            duplicate_rate,
            out,
            kafka,
            partitions,
        } => {
            let profile =
                Profile::named(&profile).with_context(|| format!("unknown profile {profile:?}"))?;
            let opts = SimOptions {
                seed,
                start,
                months,
                scale,
                invalid_rate,
                duplicate_rate,
            };
            let events = crate::simulate::generate(&profile, &opts);
            if let Some(topic) = kafka {
                let cfg = Config::load_from_process(config_path)?;
                return runtime()?.block_on(produce_to_kafka(&cfg, &topic, partitions, &events));
            }
            let mut sink: Box<dyn Write> = match &out {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p)
                        .with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            for e in &events {
                sink.write_all(e.line.as_bytes())?;
                sink.write_all(b"\n")?;
            }
            sink.flush()?;
            eprintln!(
                "simulated {} events ({} cases)",
                events.len(),
                profile_cases(&events)
            );
            Ok(0)
        }
    }
}

/// `casewatch run`: the HTTP endpoint, signal handling, and the consumer loop on its thread.
fn run_service(cfg: Config, exit_when_idle: Option<f64>) -> anyhow::Result<i32> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let rt = runtime()?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&cfg.http.listen))
        .with_context(|| format!("cannot listen on {}", cfg.http.listen))?;
    tracing::info!(address = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    rt.spawn(crate::metrics::serve(listener, metrics.clone()));
    rt.block_on(crate::pipeline::kafka::ensure_topic(
        &cfg,
        &cfg.kafka.dead_letter_topic,
        1,
    ))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        rt.spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => return,
                };
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("signal received: draining");
            stop.store(true, Ordering::Relaxed);
        });
    }
    let handle = rt.handle().clone();
    let opts = crate::pipeline::kafka::RunOptions {
        exit_when_idle: exit_when_idle.map(std::time::Duration::from_secs_f64),
    };
    let consumer = std::thread::Builder::new()
        .name("consumer".into())
        .spawn(move || crate::pipeline::kafka::run(&cfg, &handle, &metrics, &stop, opts))?;
    match consumer.join() {
        Ok(result) => result.map(|()| 0),
        Err(_) => anyhow::bail!("the consumer thread panicked"),
    }
}

/// `simulate --kafka`: produce the stream with key = case_id.
async fn produce_to_kafka(
    cfg: &Config,
    topic: &str,
    partitions: i32,
    events: &[crate::simulate::SimEvent],
) -> anyhow::Result<i32> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    crate::pipeline::kafka::ensure_topic(cfg, topic, partitions).await?;
    // Producing the same stream twice would double the broker's data (casewatch would count
    // it once): a rerun of the demo leaves a filled topic alone.
    let existing = crate::pipeline::kafka::topic_messages(cfg, topic)?;
    if existing > 0 {
        eprintln!("topic {topic} already holds {existing} messages: not producing again");
        return Ok(0);
    }
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &cfg.kafka.brokers)
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let started = std::time::Instant::now();
    let mut inflight = Vec::with_capacity(4096);
    for e in events {
        let record = FutureRecord::to(topic).key(&e.case_id).payload(&e.line);
        inflight.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?,
        );
        if inflight.len() >= 4096 {
            for f in inflight.drain(..) {
                f.await?
                    .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
            }
        }
    }
    for f in inflight {
        f.await?
            .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "produced {} events to {topic} in {secs:.1} s ({:.0}/s)",
        events.len(),
        events.len() as f64 / secs.max(1e-9)
    );
    Ok(0)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn parse_as_of(as_of: Option<&str>) -> anyhow::Result<Option<i64>> {
    as_of
        .map(|s| {
            parse_timestamp(s)
                .with_context(|| format!("--as-of {s:?} is not an RFC 3339 timestamp with offset"))
        })
        .transpose()
}

/// Replays a file into ClickHouse on the event clock, resuming after the file's checkpoint.
async fn replay_to_clickhouse(
    cfg: &Config,
    file: &std::path::Path,
    as_of: Option<&str>,
) -> anyhow::Result<i32> {
    use crate::pipeline::{rebuild, Handled, VERSIONS};
    use crate::sinks::clickhouse::{rows::Origin, ClickhouseWriter};
    let as_of = parse_as_of(as_of)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
    let origin = Origin {
        topic: format!("file:{name}"),
        partition: 0,
    };
    let mut p = rebuild(&client, origin, engine_from_config(cfg)?, Some(name))
        .await
        .with_context(|| {
            format!(
                "cannot read checkpoint and events from ClickHouse at {}",
                cfg.clickhouse.url
            )
        })?;
    let writer = ClickhouseWriter::new(client);
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let now = wall_now();
    let (mut applied, mut duplicates, mut dead) = (0u64, 0u64, 0u64);
    let resume_from = p.checkpoint;
    let mut in_flight = None;
    for line in NdjsonLines::new(BufReader::new(f)) {
        let line = line?;
        if line.number < resume_from {
            continue;
        }
        match p.handle(line.number, &line.bytes, now) {
            Handled::Applied | Handled::Evicted => applied += 1,
            Handled::Duplicate => duplicates += 1,
            Handled::DeadLetter(_) => dead += 1,
        }
        if p.pending_events() >= cfg.pipeline.batch_events {
            let mut batch = p.drain();
            batch.set_version(VERSIONS.next());
            // One write in flight while the next batch is read and applied; batches land in order.
            if let Some(write) = in_flight.take() {
                write.await??;
            }
            let writer = writer.clone();
            in_flight = Some(tokio::spawn(async move { writer.write(&batch).await }));
        }
    }
    if let Some(write) = in_flight.take() {
        write.await??;
    }
    if let Some(t) = as_of {
        p.engine.advance_to(t);
    }
    let mut batch = p.drain();
    batch.set_version(VERSIONS.next());
    writer.write(&batch).await?;
    eprintln!(
        "replayed into {}: {applied} applied, {duplicates} duplicates, {dead} dead letters{}",
        cfg.clickhouse.database,
        if resume_from > 0 {
            format!(" (resumed at line {resume_from})")
        } else {
            String::new()
        }
    );
    Ok(0)
}

fn profile_cases(events: &[crate::simulate::SimEvent]) -> usize {
    let mut ids: Vec<&str> = events.iter().map(|e| e.case_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

fn wall_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn validate(file: &std::path::Path) -> anyhow::Result<i32> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let now = wall_now();
    let mut by_reason: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let (mut valid, mut invalid) = (0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in NdjsonLines::new(BufReader::new(f)) {
        let line = line?;
        match crate::core::event::parse_event(&line.bytes, now) {
            Ok(_) => valid += 1,
            Err(reason) => {
                invalid += 1;
                *by_reason.entry(reason.to_string()).or_default() += 1;
                writeln!(
                    out,
                    "line {}: {}: {}",
                    line.number,
                    reason,
                    reason.explain()
                )?;
            }
        }
    }
    writeln!(out, "{valid} valid, {invalid} invalid")?;
    for (reason, n) in &by_reason {
        writeln!(out, "  {reason}: {n}")?;
    }
    Ok(if invalid > 0 { 1 } else { 0 })
}

/// The engine a command runs with, from configuration.
pub fn engine_from_config(cfg: &Config) -> anyhow::Result<Engine> {
    Ok(Engine::new(cfg.rules()?, cfg.calendars()?))
}

fn replay_to_csv(
    cfg: &Config,
    file: &std::path::Path,
    as_of: Option<&str>,
    out: &std::path::Path,
) -> anyhow::Result<i32> {
    if cfg.engine.clock == ClockMode::Wall {
        tracing::debug!("replay always runs on the event clock");
    }
    let as_of = as_of
        .map(|s| {
            parse_timestamp(s)
                .with_context(|| format!("--as-of {s:?} is not an RFC 3339 timestamp with offset"))
        })
        .transpose()?;
    let mut engine = engine_from_config(cfg)?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(size),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let mut read = 0u64;
    let summary = replay_lines(
        &mut engine,
        NdjsonLines::new(BufReader::new(f)),
        wall_now(),
        as_of,
        |s, _| {
            if s.lines % 4096 == 0 {
                read = s.lines;
                bar.set_position(bar.position().max(read));
            }
        },
    )?;
    bar.finish_and_clear();
    write_csv_outputs(&mut engine, &summary, out)?;
    eprintln!(
        "replayed {} lines: {} applied, {} duplicates, {} dead letters; {} cases; outputs in {}",
        summary.lines,
        summary.applied,
        summary.duplicates,
        summary.dead_letters.len(),
        engine.case_count(),
        out.display()
    );
    Ok(0)
}

fn parse_instant(s: &str) -> anyhow::Result<i64> {
    parse_timestamp(s).with_context(|| format!("{s:?} is not an RFC 3339 timestamp with offset"))
}

fn parse_unit(s: &str) -> anyhow::Result<crate::core::calendar::DayUnit> {
    match s {
        "working" => Ok(crate::core::calendar::DayUnit::Working),
        "calendar" => Ok(crate::core::calendar::DayUnit::Calendar),
        _ => anyhow::bail!("--unit must be working or calendar, not {s:?}"),
    }
}

/// An instant in the calendar's local time, with offset.
fn format_local(cal: &crate::core::calendar::WorkCalendar, t: i64) -> String {
    use chrono::TimeZone;
    cal.tz()
        .timestamp_opt(t, 0)
        .single()
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

fn calendar_command(cfg: &Config, cmd: &CalendarCommand) -> anyhow::Result<i32> {
    use crate::core::calendar::DAY;
    let calendars = || cfg.calendars();
    match cmd {
        CalendarCommand::Import {
            file,
            dry_run,
            papers,
        } => return calendar_import(cfg, file, *dry_run, papers),
        CalendarCommand::Coverage => {
            print!("{}", crate::holidays::coverage_table(cfg)?);
            let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
            let rows = runtime()?
                .block_on(crate::holidays::provisional_open_cases(&client))
                .context("reading the open cases from ClickHouse (casewatch migrate first?)")?;
            print!("{}", crate::holidays::provisional_table(cfg, &rows)?);
        }
        CalendarCommand::Deadline {
            from,
            days,
            unit,
            center,
        } => {
            let calendars = calendars()?;
            let cal = calendars.get(center);
            let start = parse_instant(from)?;
            let deadline = cal.add_working(start, days * DAY, parse_unit(unit)?);
            println!("{}", format_local(cal, deadline));
        }
        CalendarCommand::WorkingTime {
            from,
            to,
            unit,
            center,
        } => {
            let calendars = calendars()?;
            let cal = calendars.get(center);
            let secs =
                cal.working_seconds(parse_instant(from)?, parse_instant(to)?, parse_unit(unit)?);
            println!("{secs} s = {:.6} days", secs as f64 / DAY as f64);
        }
        CalendarCommand::Days { from, to, center } => {
            let calendars = calendars()?;
            let cal = calendars.get(center);
            let mut d = *from;
            while d <= *to {
                println!(
                    "{d} {} {}",
                    d.format("%a"),
                    if cal.is_working_date(d) {
                        "working"
                    } else {
                        "off"
                    }
                );
                d = d.succ_opt().context("date out of range")?;
            }
        }
    }
    Ok(0)
}

/// `casewatch calendar import`: exit 2 for a notice it cannot read (the error quotes the line).
fn calendar_import(
    cfg: &Config,
    file: &std::path::Path,
    dry_run: bool,
    papers: &[String],
) -> anyhow::Result<i32> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read {} as UTF-8 text", file.display()))?;
    let notice = match crate::core::notice::parse_notice(&text) {
        Ok(notice) => notice,
        Err(e) => {
            eprintln!(
                "error: {}: not imported, nothing written\n{e}",
                file.display()
            );
            return Ok(2);
        }
    };
    print!("{}", crate::holidays::days_table(&notice));
    if dry_run {
        println!("dry run: nothing written");
        return Ok(0);
    }
    let dir = &cfg.calendar.holidays_dir;
    anyhow::ensure!(
        !dir.is_empty(),
        "calendar.holidays_dir is not set (the binary's own 2007–2026 data is in use): set it to \
         a directory of holiday files, e.g. a copy of config/holidays, and import again"
    );
    let (path, replaced) = crate::holidays::write_year(std::path::Path::new(dir), &notice, papers)
        .with_context(|| format!("writing into {dir}"))?;
    println!(
        "{} {} (a running casewatch reloads it within 10 s and recomputes open cases)",
        if replaced { "replaced" } else { "wrote" },
        path.display()
    );
    Ok(0)
}

/// `casewatch bulletin`.
async fn bulletin_command(
    cfg: &Config,
    period: &str,
    center: Option<&str>,
    lang: &str,
    out: &std::path::Path,
) -> anyhow::Result<i32> {
    use crate::bulletin::{render, Period, Weights};
    let lang = match lang {
        "zh" => render::Lang::Zh,
        "en" => render::Lang::En,
        other => anyhow::bail!("--lang must be zh or en, not {other:?}"),
    };
    let tz = cfg.calendars()?.get(center.unwrap_or("")).tz();
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let period = Period::parse(period, today)?;
    let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
    let figures = crate::bulletin::load(&client, cfg, period, center).await?;
    let w = cfg.bulletin.weights;
    let ranked = crate::bulletin::rank(
        &figures.windows,
        Weights {
            on_site: w.on_site,
            on_time: w.on_time,
            early: w.early,
            evaluation: w.evaluation,
            satisfaction: w.satisfaction,
        },
    );
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let label = period.label();
    let files = [
        (
            format!("bulletin-{label}.md"),
            render::markdown(lang, &figures, &ranked),
        ),
        (
            format!("bulletin-{label}.html"),
            render::html(lang, &figures, &ranked),
        ),
        (format!("ranking-{label}.csv"), render::csv(lang, &ranked)),
    ];
    for (name, text) in files {
        let path = out.join(&name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(0)
}
