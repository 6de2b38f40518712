//! One function per subcommand: load, call the library, print, return the exit code.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{CalendarCommand, ProfileName, Sink};
use crate::config::Config;
use crate::core::calendar::{Instant, WorkCalendar, DAY};
use crate::replay::{replay_lines, write_csv_outputs, NdjsonLines};
use crate::simulate::{Profile, SimEvent, SimOptions};

pub(super) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn wall_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `casewatch serve`.
pub(super) fn serve(cfg: &Config) -> anyhow::Result<i32> {
    runtime()?.block_on(crate::console::serve(cfg))?;
    Ok(0)
}

/// `casewatch console hash-password`: the password is the first line of standard input.
pub(super) fn hash_password() -> anyhow::Result<i32> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let password = line.trim_end_matches(['\r', '\n']);
    anyhow::ensure!(!password.is_empty(), "no password on standard input");
    println!("{}", crate::console::auth::hash_password(password)?);
    Ok(0)
}

/// `casewatch check-config`.
pub(super) fn check_config(cfg: &Config) -> anyhow::Result<i32> {
    print!("{}", cfg.to_masked_toml());
    Ok(0)
}

/// `casewatch validate`: a reason per invalid line; exit 1 if any.
pub(super) fn validate(
    file: &Path,
    mut engine: Option<crate::core::engine::Engine>,
) -> anyhow::Result<i32> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let now = wall_now();
    let mut by_reason: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let (mut valid, mut invalid) = (0u64, 0u64);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for line in NdjsonLines::new(BufReader::new(f)) {
        let line = line?;
        let parsed =
            crate::core::event::parse_event(&line.bytes, now).and_then(|event| {
                match engine.as_mut().map(|e| e.apply(&event)) {
                    Some(crate::core::engine::ApplyOutcome::InvalidAction) => {
                        Err(crate::core::event::Reason::InvalidAction)
                    }
                    _ => Ok(event),
                }
            });
        match parsed {
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

/// `casewatch replay`.
pub(super) fn replay(
    cfg: &Config,
    file: &Path,
    as_of: Option<Instant>,
    sink: Sink,
    out: Option<&Path>,
) -> anyhow::Result<i32> {
    match (sink, out) {
        (Sink::Csv, Some(out)) => replay_to_csv(cfg, file, as_of, out),
        (Sink::Csv, None) => anyhow::bail!("--sink csv needs --out DIR"),
        (Sink::Clickhouse, _) => {
            let done = crate::pipeline::replay::replay_file(cfg, &runtime()?, file, as_of)?;
            eprintln!(
                "replayed into {}: {} applied, {} duplicates, {} dead letters{}",
                cfg.clickhouse.database,
                done.applied,
                done.duplicates,
                done.dead_letters,
                if done.resumed_at > 0 {
                    format!(" (resumed at line {})", done.resumed_at)
                } else {
                    String::new()
                }
            );
            Ok(0)
        }
    }
}

fn replay_to_csv(
    cfg: &Config,
    file: &Path,
    as_of: Option<Instant>,
    out: &Path,
) -> anyhow::Result<i32> {
    let mut engine = cfg.new_engine()?;
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(size),
        indicatif::ProgressDrawTarget::stderr(),
    );
    let summary = replay_lines(
        &mut engine,
        NdjsonLines::new(BufReader::new(f)),
        wall_now(),
        as_of,
        |s, _| {
            if s.lines % 4096 == 0 {
                bar.set_position(bar.position().max(s.lines));
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

/// `casewatch migrate`.
pub(super) fn migrate(cfg: &Config, cluster: Option<&str>) -> anyhow::Result<i32> {
    let admin = crate::sinks::clickhouse::admin_client(&cfg.clickhouse);
    let database = &cfg.clickhouse.database;
    let cluster = cluster.unwrap_or(&cfg.clickhouse.cluster);
    let applied = runtime()?
        .block_on(crate::sinks::clickhouse::migrate::migrate(
            &admin, database, cluster,
        ))
        .with_context(|| format!("cannot migrate ClickHouse at {}", cfg.clickhouse.url))?;
    if applied.is_empty() {
        eprintln!("database {database} is up to date");
    } else {
        eprintln!("database {database}: applied migrations {applied:?}");
    }
    Ok(0)
}

/// `casewatch run`: the service until SIGINT/SIGTERM (or idleness).
pub(super) fn run_service(cfg: &Config, exit_when_idle: Option<f64>) -> anyhow::Result<i32> {
    use crate::pipeline::{consumer::RunOptions, service};
    let opts = RunOptions {
        exit_when_idle: exit_when_idle.map(std::time::Duration::from_secs_f64),
    };
    service::run(cfg, &runtime()?, service::signals(), opts)?;
    Ok(0)
}

/// `casewatch alerts test`: exit 1 when the sample alert was not delivered.
pub(super) fn alerts_test(cfg: Config, webhook: &str) -> anyhow::Result<i32> {
    let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
    let delivered = runtime()?.block_on(crate::alerts::deliver::send_test(
        std::sync::Arc::new(cfg),
        client,
        webhook,
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

/// `casewatch drain-count`: the broker's limit for the benchmark.
pub(super) fn drain_count(
    cfg: &Config,
    topic: Option<String>,
    expected: i64,
) -> anyhow::Result<i32> {
    let topic = topic.unwrap_or_else(|| cfg.kafka.topic.clone());
    let (count, secs) = crate::pipeline::kafka::drain_count(cfg, &topic, expected)?;
    println!(
        "{{\"messages\": {count}, \"seconds\": {secs:.3}, \"per_second\": {:.0}}}",
        count as f64 / secs.max(1e-9)
    );
    Ok(0)
}

/// `casewatch raw-store`.
pub(super) fn raw_store(cfg: &Config, topic: Option<String>, expected: i64) -> anyhow::Result<i32> {
    let topic = topic.unwrap_or_else(|| cfg.kafka.topic.clone());
    let (count, secs) = crate::pipeline::baseline::raw_store(cfg, &runtime()?, &topic, expected)?;
    println!(
        "{{\"messages\": {count}, \"seconds\": {secs:.3}, \"per_second\": {:.0}}}",
        count as f64 / secs.max(1e-9)
    );
    Ok(0)
}

/// `casewatch verify`.
pub(super) fn verify(
    cfg: &Config,
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
) -> anyhow::Result<i32> {
    runtime()?.block_on(crate::verify::verify_command(cfg, from, to))
}

/// `casewatch bulletin`: Markdown, HTML and the ranking CSV into `out`.
pub(super) fn bulletin(
    cfg: &Config,
    period: &str,
    center: Option<&str>,
    lang: crate::bulletin::render::Lang,
    out: &Path,
) -> anyhow::Result<i32> {
    use crate::bulletin::{render, Period, Weights};
    let tz = cfg.calendars()?.get(center.unwrap_or("")).tz();
    let today = chrono::Utc::now().with_timezone(&tz).date_naive();
    let period = Period::parse(period, today)?;
    let client = crate::sinks::clickhouse::client(&cfg.clickhouse);
    let figures = runtime()?.block_on(crate::bulletin::load(&client, cfg, period, center))?;
    let ranked = crate::bulletin::rank(&figures.windows, Weights::of(cfg));
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

/// An instant in the calendar's local time, with offset.
fn format_local(cal: &WorkCalendar, t: i64) -> String {
    use chrono::TimeZone;
    cal.tz()
        .timestamp_opt(t, 0)
        .single()
        .map(|d| d.to_rfc3339())
        .unwrap_or_default()
}

/// `casewatch calendar …`.
pub(super) fn calendar(cfg: &Config, cmd: &CalendarCommand) -> anyhow::Result<i32> {
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
            let deadline = cal.add_working(*from, days * DAY, (*unit).into());
            println!("{}", format_local(cal, deadline));
        }
        CalendarCommand::WorkingTime {
            from,
            to,
            unit,
            center,
        } => {
            let secs = calendars()?
                .get(center)
                .working_seconds(*from, *to, (*unit).into());
            println!("{secs} s = {:.6} days", secs as f64 / DAY as f64);
        }
        CalendarCommand::Days { from, to, center } => {
            let calendars = calendars()?;
            let cal = calendars.get(center);
            let mut d = *from;
            while d <= *to {
                let kind = if cal.is_working_date(d) {
                    "working"
                } else {
                    "off"
                };
                println!("{d} {} {kind}", d.format("%a"));
                d = d.succ_opt().context("date out of range")?;
            }
        }
    }
    Ok(0)
}

/// `casewatch calendar import`: exit 2 for a notice it cannot read (the error quotes the line).
fn calendar_import(
    cfg: &Config,
    file: &Path,
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
    let (path, replaced) = crate::holidays::write_year(Path::new(dir), &notice, papers)
        .with_context(|| format!("writing into {dir}"))?;
    println!(
        "{} {} (a running casewatch reloads it within 10 s and recomputes open cases)",
        if replaced { "replaced" } else { "wrote" },
        path.display()
    );
    Ok(0)
}

/// Where `simulate` writes.
pub(super) enum SimTarget {
    /// An NDJSON file (standard output when None).
    File(Option<PathBuf>),
    /// A Kafka topic (key = case_id), created with this many partitions when missing; the
    /// flag appends to a topic that already holds messages.
    Kafka(Box<Config>, String, i32, bool),
}

/// `casewatch simulate`.
pub(super) fn simulate(
    profile: ProfileName,
    opts: &SimOptions,
    target: SimTarget,
) -> anyhow::Result<i32> {
    let profiles = match profile {
        ProfileName::County => vec![Profile::county()],
        ProfileName::Province => Profile::province(),
    };
    let events = crate::simulate::generate_all(&profiles, opts);
    let out = match target {
        SimTarget::Kafka(cfg, topic, partitions, append) => {
            return runtime()?
                .block_on(produce_to_kafka(&cfg, &topic, partitions, append, &events));
        }
        SimTarget::File(out) => out,
    };
    let mut sink: Box<dyn Write> = match &out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    for e in &events {
        sink.write_all(e.line.as_bytes())?;
        sink.write_all(b"\n")?;
    }
    sink.flush()?;
    let mut ids: Vec<&str> = events.iter().map(|e| e.case_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    eprintln!("simulated {} events ({} cases)", events.len(), ids.len());
    Ok(0)
}

/// `simulate --kafka`: produce the stream with key = case_id.
async fn produce_to_kafka(
    cfg: &Config,
    topic: &str,
    partitions: i32,
    append: bool,
    events: &[SimEvent],
) -> anyhow::Result<i32> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    crate::pipeline::kafka::ensure_topic(cfg, topic, partitions).await?;
    // Producing the same stream twice would double the broker's data (casewatch would count
    // it once): a rerun of the demo leaves a filled topic alone.
    let existing = crate::pipeline::kafka::topic_messages(cfg, topic)?;
    if existing > 0 && !append {
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
