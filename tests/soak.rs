//! Soak (`make soak`): long, bounded, self-stopping versions of the reliability scenarios. Run with
//! `cargo test --test soak -- --ignored --test-threads 1`; every scenario records a row, and the
//! last test (`zz_report`) prints the table and writes `bench/soak-results.md`.

mod support;

use std::time::{Duration, Instant};

use rootkey_operator::api::ConditionStatus;
use rootkey_sandbox::FaultAction;
use support::{
    checks::{self, Row},
    env::{Env, OperatorOptions, SpawnExtra},
};

async fn operator_env(prefix: &str) -> Env {
    let mut env = Env::without_operator(prefix).await;
    env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    env
}

fn fmt_converge(r: &Result<Duration, Vec<String>>) -> String {
    match r {
        Ok(d) => format!("{:.1} s", d.as_secs_f64()),
        Err(missing) => format!("NOT CONVERGED ({} left)", missing.len()),
    }
}

#[tokio::test]
#[ignore = "soak"]
async fn a_faults_200_objects_30pct_for_60s() {
    let env = operator_env("soak-faults").await;
    let objs = checks::populate(&env, 200).await;
    for f in checks::storm(0.3) {
        env.sandbox.add_fault(f);
    }
    checks::apply_all(&env, &objs).await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    env.sandbox.clear_faults();
    let converge = checks::wait_all_ready(&env, &objs, Duration::from_secs(300)).await;
    let log = env.sandbox.requests();
    let (total, failed) = checks::injected(&log);
    let (checked, violations) = checks::retry_after_violations(&log);
    let inv = checks::invariants(&env, &objs);
    let metrics = env.metrics(0).await.unwrap_or_default();
    let (calls, retried) = checks::remote_calls(&metrics);
    let leaked = checks::leaked_secrets(&env, std::slice::from_ref(&metrics), &[]).await;
    checks::record_row(&Row {
        scenario: "a: 30% faults on every service, 60 s".into(),
        objects: objs.len(),
        faults: format!("{failed}/{total} requests (429+RA, 5xx, drops, latency)"),
        converge: fmt_converge(&converge),
        retries: format!("{retried} of {calls} calls"),
        duplicates: inv.duplicates,
        lost: inv.lost,
        leaked: leaked.len(),
        notes: format!("{checked} 429s checked, {} Retry-After violations", violations.len()),
    });
    assert!(converge.is_ok());
    assert!(violations.is_empty(), "{:#?}", &violations[..violations.len().min(20)]);
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
    assert!(leaked.is_empty());
}

#[tokio::test]
#[ignore = "soak"]
async fn b_total_429_storm_on_every_hsm_call_for_2_minutes() {
    let env = operator_env("soak-429").await;
    let objs = checks::populate(&env, 50).await;
    env.sandbox.add_fault(checks::fault("hsm", None, FaultAction::Status { status: 429, retry_after: Some(5) }, None));
    checks::apply_all(&env, &objs).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let storm_log = env.sandbox.requests();
    env.sandbox.clear_faults();
    let converge = checks::wait_all_ready(&env, &objs, Duration::from_secs(300)).await;
    let peaks = checks::peak_rates(&storm_log);
    let storm_hsm = storm_log.iter().filter(|r| r.service == "hsm" && !r.internal).count();
    let (_, violations) = checks::retry_after_violations(&storm_log);
    let inv = checks::invariants(&env, &objs);
    let metrics = env.metrics(0).await.unwrap_or_default();
    let (calls, retried) = checks::remote_calls(&metrics);
    let leaked = checks::leaked_secrets(&env, std::slice::from_ref(&metrics), &[]).await;
    // Budgets per HSM (Managed HSM service limits the sandbox enforces): create 1/s, RBAC 5/s, reads 1100/s.
    let over = peaks.get("create").is_some_and(|p| *p > 2)
        || peaks.get("rbac").is_some_and(|p| *p > 10)
        || peaks.get("read").is_some_and(|p| *p > 1100);
    checks::record_row(&Row {
        scenario: "b: every HSM call 429 (Retry-After 5), 2 min".into(),
        objects: objs.len(),
        faults: format!("{storm_hsm} HSM requests throttled ({:.2}/s)", storm_hsm as f64 / 120.0),
        converge: fmt_converge(&converge),
        retries: format!("{retried} of {calls} calls"),
        duplicates: inv.duplicates,
        lost: inv.lost,
        leaked: leaked.len(),
        notes: format!("peak HSM req/s by class {peaks:?}; {} Retry-After violations", violations.len()),
    });
    assert!(converge.is_ok());
    assert!(!over, "over budget: {peaks:?}");
    assert!(violations.is_empty(), "{:#?}", &violations[..violations.len().min(20)]);
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
}

#[tokio::test]
#[ignore = "soak"]
async fn c_sigkill_20_times() {
    let mut env = operator_env("soak-kill").await;
    let objs = checks::populate(&env, 40).await;
    checks::apply_all(&env, &objs).await;
    let start = Instant::now();
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..4000))).await;
        env.kill_operator(env.operator_count() - 1);
        env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    }
    let converge = checks::wait_all_ready(&env, &objs, Duration::from_secs(300)).await;
    let (gone, kept) = objs.split_at(20);
    for o in gone {
        env.delete(&o.name).await;
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(100..1500))).await;
        env.kill_operator(env.operator_count() - 1);
        env.spawn_operator_ext(&OperatorOptions::default(), &SpawnExtra::default());
    }
    for o in gone {
        env.wait_gone(&o.name, Duration::from_secs(120)).await;
    }
    let orphans = checks::orphans(&env, gone);
    let inv = checks::invariants(&env, kept);
    let metrics = env.metrics(env.operator_count() - 1).await.unwrap_or_default();
    let leaked = checks::leaked_secrets(&env, std::slice::from_ref(&metrics), &[]).await;
    checks::record_row(&Row {
        scenario: "c: SIGKILL 20x at random points (+3 during Revoke)".into(),
        objects: objs.len(),
        faults: "23 SIGKILLs".into(),
        converge: format!("{} (kills took {:.0} s)", fmt_converge(&converge), start.elapsed().as_secs_f64()),
        retries: "-".into(),
        duplicates: inv.duplicates,
        lost: inv.lost + orphans.len(),
        leaked: leaked.len(),
        notes: format!("{} orphans after Revoke", orphans.len()),
    });
    assert!(converge.is_ok());
    assert!(orphans.is_empty(), "{orphans:#?}");
    assert_eq!(inv.duplicates + inv.lost, 0, "{:#?}", inv.details);
}

#[tokio::test]
#[ignore = "soak"]
async fn d_slow_loris_and_huge_bodies_on_every_remote() {
    let env = operator_env("soak-hostile").await;
    env.api_key_secret("api-key", support::env::API_KEY).await;
    let mut worst = Duration::ZERO;
    let mut n = 0;
    for (svc, op) in
        [("hsm", "key.get"), ("hsm", "rbac.assignment.get"), ("antimatter", "rek.test"), ("entra", "token")]
    {
        for action in [FaultAction::Trickle { bytes: 200, every_ms: 500 }, FaultAction::Huge { bytes: 10 << 20 }] {
            n += 1;
            let name = format!("h{n}");
            env.sandbox.add_fault(checks::fault(svc, Some(op), action, None));
            env.apply(&name, env.spec(&format!("k-h{n}"), serde_json::json!({}))).await;
            let start = Instant::now();
            env.wait_for(&name, Duration::from_secs(90), "a condition under the fault", |o| {
                support::env::condition(o, "Ready")
                    .is_some_and(|c| c.status == ConditionStatus::False && !c.reason.starts_with("Waiting"))
                    || support::env::condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
            })
            .await;
            worst = worst.max(start.elapsed());
            env.sandbox.clear_faults();
            env.wait_for(&name, Duration::from_secs(330), "Ready after", |o| {
                support::env::condition(o, "Ready").is_some_and(|c| c.status == ConditionStatus::True)
            })
            .await;
        }
    }
    let pid = env.operator_pid(0);
    let hwm_kb = checks::peak_rss_kib(pid);
    let metrics = env.metrics(0).await.unwrap_or_default();
    let leaked = checks::leaked_secrets(&env, std::slice::from_ref(&metrics), &[]).await;
    checks::record_row(&Row {
        scenario: "d: slow-loris + 10 MB bodies on 4 remotes".into(),
        objects: n,
        faults: "trickle 2 B/s, 10 MiB bodies".into(),
        converge: format!("all Ready; worst time to a condition {:.1} s", worst.as_secs_f64()),
        retries: "-".into(),
        duplicates: 0,
        lost: 0,
        leaked: leaked.len(),
        notes: format!("peak RSS {} MiB", hwm_kb / 1024),
    });
    assert!(hwm_kb < 256 * 1024);
    assert!(leaked.is_empty());
}

#[tokio::test]
#[ignore = "soak"]
async fn zz_report() {
    let mut rows: Vec<Row> = std::fs::read_dir(checks::rows_dir())
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|t| serde_json::from_str(&t).ok())
                .collect()
        })
        .unwrap_or_default();
    rows.sort_by(|a, b| a.scenario.cmp(&b.scenario));
    let mut md = String::from(
        "| scenario | objects | faults injected | time to converge | retries | duplicates | data lost | secrets leaked | notes |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.scenario, r.objects, r.faults, r.converge, r.retries, r.duplicates, r.lost, r.leaked, r.notes
        ));
    }
    println!("\n{md}");
    let path = std::path::Path::new("bench/soak-results.md");
    std::fs::create_dir_all(path.parent().expect("bench/")).expect("bench/");
    std::fs::write(
        path,
        format!("# Soak results (`make soak`)\n\nGenerated by `tests/soak.rs`; rerun to refresh.\n\n{md}"),
    )
    .expect("write report");
    let _ = std::fs::remove_dir_all(checks::rows_dir());
}
