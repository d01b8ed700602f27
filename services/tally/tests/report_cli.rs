//! `tally report emissions` against the real ClickHouse: every format agrees with the
//! `emissions_monthly` view, and the HTML page renders in headless Chromium to a picture that
//! is not blank.
use std::process::Command;

use tally_contract::records::EnrichedLlmCall;
use tally_sink::migrate::{migrate, Migration};
use tally_sink::rows::LlmCallRow;
use tally_tests::{chromium, clickhouse_url, unique_name, TestDatabase};

fn tally(args: &[&str], database: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .env("TALLY_CLICKHOUSE_URL", clickhouse_url())
        .env("TALLY__CLICKHOUSE__DATABASE", database)
        .env_remove("TALLY_LOG")
        .output()
        .expect("tally runs")
}

#[tokio::test]
async fn emissions_report_agrees_with_the_view_and_renders() {
    let db = TestDatabase::create("it_report").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &tally_sink::migrate::Topology::SingleNode,
    )
    .await
    .unwrap();
    let template: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    let mut insert = db.client.insert::<LlmCallRow>("llm_calls").await.unwrap();
    let teams = ["payments", "search", "growth"];
    let models = ["gpt-4o", "claude-sonnet-4-5"];
    let regions = ["us-east-1", "europe-west4"];
    for i in 0..60i64 {
        let mut e = template.clone();
        e.call.event_id = format!("r{i}");
        e.call.team = teams[i as usize % 3].into();
        e.call.model = models[i as usize % 2].into();
        e.call.region = Some(regions[i as usize % 2].into());
        // October and November 2026
        e.call.occurred_at = if i < 30 {
            1_790_812_800_000_000
        } else {
            1_793_491_200_000_000
        } + i * 60_000_000;
        e.energy_uwh_low = 1_000_000 + i * 1_000;
        e.energy_uwh_central = 2_000_000 + i * 1_000;
        e.energy_uwh_high = 4_000_000 + i * 1_000;
        e.co2e_ug_low = 300_000 + i;
        e.co2e_ug_central = 700_000 + i * 7;
        e.co2e_ug_high = 1_500_000 + i;
        insert.write(&LlmCallRow::new(e, 0, i)).await.unwrap();
    }
    insert.end().await.unwrap();

    let (co2_central, kwh_central): (String, String) = db
        .client
        .query("SELECT toString(sum(co2e_kg_central)), toString(sum(energy_kwh_central)) FROM emissions_monthly WHERE month >= '2026-10-01' AND month < '2026-12-01'")
        .fetch_one()
        .await
        .unwrap();

    let out = tally(
        &[
            "report",
            "emissions",
            "--from",
            "2026-10-01",
            "--to",
            "2026-12-01",
            "--format",
            "json",
        ],
        &db.name,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let micro = |v: &serde_json::Value| v.as_i64().unwrap();
    // The view says kg and kWh as exact decimals; the report keeps micro-units.
    let as_decimal = |micro_units: i64| {
        let text = format!(
            "{}.{:09}",
            micro_units / 1_000_000_000,
            micro_units % 1_000_000_000
        );
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    };
    assert_eq!(
        as_decimal(micro(&report["totals"]["co2e_ug"][1])),
        co2_central
    );
    assert_eq!(
        as_decimal(micro(&report["totals"]["energy_uwh"][1])),
        kwh_central
    );
    assert_eq!(report["totals"]["calls"], 60);
    assert_eq!(
        report["breakdown"].as_array().unwrap().len(),
        3 * 2,
        "team x model x region combinations present"
    );
    assert!(report["carbon_method_versions"][0]
        .as_str()
        .unwrap()
        .starts_with("simple-1"));
    assert!(report["assumptions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a.as_str().unwrap().contains("480.6 g/kWh")));

    let csv = tally(
        &[
            "report",
            "emissions",
            "--from",
            "2026-10-01",
            "--to",
            "2026-12-01",
            "--format",
            "csv",
            "--by",
            "team",
        ],
        &db.name,
    );
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert_eq!(
        csv.lines().count(),
        1 + 3 + 1,
        "header, three teams, total:\n{csv}"
    );
    assert!(
        csv.lines().last().unwrap().starts_with("\"TOTAL\",60,"),
        "{csv}"
    );

    let dir = std::env::temp_dir().join(unique_name("report"));
    std::fs::create_dir_all(&dir).unwrap();
    let html = dir.join("emissions.html");
    let out = tally(
        &[
            "report",
            "emissions",
            "--from",
            "2026-10-01",
            "--to",
            "2026-12-01",
            "--format",
            "html",
            "--out",
            html.to_str().unwrap(),
        ],
        &db.name,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg")
            && page.contains("CO2e by team over time")
            && page.contains("CO2e by model")
    );
    assert!(
        !page.contains("http://") && !page.contains("<script"),
        "self-contained: no network, no script"
    );

    let png = dir.join("emissions.png");
    let profile = dir.join("profile");
    let status = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg("--window-size=1000,1400")
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("chromium runs");
    assert!(
        png.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&status.stderr)
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let channels = info.color_type.samples();
    let coloured = buffer[..info.buffer_size()]
        .chunks(channels)
        .filter(|px| px.iter().take(3).any(|c| *c < 200))
        .count();
    assert!(
        coloured > 5_000,
        "the rendered page is nearly blank ({coloured} non-white pixels)"
    );
    eprintln!(
        "[report] rendered {}x{} with {coloured} non-white pixels: {}",
        info.width,
        info.height,
        png.display()
    );
    if std::env::var("TALLY_KEEP_REPORT").is_err() {
        std::fs::remove_dir_all(dir).unwrap();
    }
    db.drop_database().await;
}

#[tokio::test]
async fn spend_attribution_and_loops_reports_agree_with_the_sql() {
    use tally_contract::records::{DeployEvent, LoopSignal, TicketEvent, TicketStatus};
    use tally_sink::rows::{DeployRow, LoopSignalRow, TicketRow};
    let db = TestDatabase::create("it_reports").await;
    let server = clickhouse::Client::default().with_url(clickhouse_url());
    migrate(
        &server,
        &db.name,
        &Migration::embedded().unwrap(),
        &tally_sink::migrate::Topology::SingleNode,
    )
    .await
    .unwrap();
    let nov = 1_793_491_200_000_000i64; // 2026-11-01
    let template: EnrichedLlmCall = tally_tests::fixture("EnrichedLlmCall");
    let mut insert = db.client.insert::<LlmCallRow>("llm_calls").await.unwrap();
    for i in 0..9i64 {
        let mut e = template.clone();
        e.call.event_id = format!("s{i}");
        e.call.team = ["payments", "search", "growth"][i as usize % 3].into();
        e.call.occurred_at = nov + i * 3_600_000_000;
        e.call.ticket_id = (i == 0).then(|| "PAY-9".to_string());
        e.unpriced = i == 8;
        e.cost_total_nanos = (i != 8).then_some(123_456_789 * (i + 1));
        insert.write(&LlmCallRow::new(e, 0, i)).await.unwrap();
    }
    insert.end().await.unwrap();
    let mut deploy: DeployEvent = tally_tests::fixture("DeployEvent");
    (deploy.team, deploy.occurred_at, deploy.status) = (
        "payments".into(),
        nov + 20 * 3_600_000_000,
        tally_contract::records::DeployStatus::Succeeded,
    );
    deploy.ticket_ids = vec!["PAY-9".into()];
    let mut insert = db.client.insert::<DeployRow>("deploys").await.unwrap();
    insert.write(&DeployRow::from(deploy)).await.unwrap();
    insert.end().await.unwrap();
    let mut insert = db.client.insert::<TicketRow>("tickets").await.unwrap();
    for (i, (status, hour)) in [(TicketStatus::Opened, 0), (TicketStatus::Closed, 30)]
        .into_iter()
        .enumerate()
    {
        let mut t: TicketEvent = tally_tests::fixture("TicketEvent");
        (t.event_id, t.ticket_id, t.team, t.status, t.occurred_at) = (
            format!("t{i}"),
            "PAY-9".into(),
            "payments".into(),
            status,
            nov + hour * 3_600_000_000,
        );
        insert.write(&TicketRow::from(t)).await.unwrap();
    }
    insert.end().await.unwrap();
    let mut signal: LoopSignal = tally_tests::fixture("LoopSignal");
    signal.first_event_at = nov;
    signal.last_event_at = nov + 1_000_000;
    let mut insert = db
        .client
        .insert::<LoopSignalRow>("loop_signals")
        .await
        .unwrap();
    insert
        .write(&LoopSignalRow::from(signal.clone()))
        .await
        .unwrap();
    insert.end().await.unwrap();

    let range = ["--from", "2026-11-01", "--to", "2026-12-01"];
    let json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["report"];
        all.extend_from_slice(args);
        all.extend_from_slice(&range);
        all.extend_from_slice(&["--format", "json"]);
        let out = tally(&all, &db.name);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    let spend = json(&["spend"]);
    let by_team: Vec<(String, String)> = db
        .client
        .query("SELECT team, toString(sum(ifNull(cost_usd, 0))) FROM llm_calls FINAL GROUP BY team ORDER BY sum(ifNull(cost_total_nanos, 0)) DESC")
        .fetch_all()
        .await
        .unwrap();
    let reported: Vec<(String, String)> = spend["sections"][0]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["team"].as_str().unwrap().to_string(),
                r["cost_usd"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(reported, by_team, "spend by team, to the nano-dollar");
    assert_eq!(
        spend["sections"][0]["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["unpriced_calls"].as_str().unwrap())
            .collect::<Vec<_>>()
            .concat(),
        "001"
    );

    let attribution = json(&[
        "attribution",
        "--unattributed-share",
        "0.5",
        "--loaded-hourly-rate-usd",
        "100",
    ]);
    let (deploy_cost, ticket_cost): (String, String) = db
        .client
        .query("SELECT toString(team_cost_usd), toString(ticket_cost_usd) FROM cost_per_deploy")
        .fetch_one()
        .await
        .unwrap();
    let deploy_row = &attribution["sections"][0]["rows"][0];
    assert_eq!(
        (
            deploy_row["team_cost_usd"].as_str().unwrap(),
            deploy_row["ticket_cost_usd"].as_str().unwrap()
        ),
        (deploy_cost.as_str(), ticket_cost.as_str())
    );
    let attributed: String = db
        .client
        .query("SELECT toString(attributed_cost_usd) FROM cost_per_ticket(unattributed_share = 0.5, loaded_hourly_rate_usd = 100)")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(
        attribution["sections"][1]["rows"][0]["attributed_cost_usd"]
            .as_str()
            .unwrap(),
        attributed
    );
    assert_eq!(
        attribution["sections"][2]["rows"].as_array().unwrap().len(),
        3,
        "one month for each of three teams"
    );

    let loops = json(&["loops"]);
    let row = &loops["sections"][0]["rows"][0];
    assert_eq!(row["signal_type"], "retry_storm");
    assert_eq!(row["cost_usd"], "24.3984");
    assert_eq!(row["explanation"].as_str().unwrap(), signal.explanation);

    let out = tally(
        &[
            "report",
            "attribution",
            "--from",
            "2026-11-01",
            "--to",
            "2026-12-01",
            "--format",
            "html",
        ],
        &db.name,
    );
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(page.contains("<svg") && page.contains("Cost per deploy") && !page.contains("<script"));
    db.drop_database().await;
}
