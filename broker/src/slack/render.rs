//! Notices as Block Kit messages, in English or Japanese: what happened, to which
//! vehicles, why, and what a person should do next. The plain `text` is the notification
//! preview and the fallback for clients without blocks.

use std::time::{Duration, UNIX_EPOCH};

use fleet_rules::UnixMs;
use slack_morphism::prelude::*;

use super::digest::Digest;
use super::notice::Notice;

/// Vehicles listed in one message; a bigger burst becomes several messages.
pub const VEHICLES_PER_MESSAGE: usize = 100;
/// Lines per section block (Slack cuts a section's text at 3,000 characters).
const LINES_PER_SECTION: usize = 25;
/// Ids of a mass-loss sample shown.
const SAMPLE_SHOWN: usize = 20;

/// The language of the messages (`[slack] language`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English.
    #[default]
    En,
    /// Japanese.
    Ja,
}

/// Language and time zone of the messages.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Language.
    pub lang: Language,
    /// Offset from UTC in minutes for the times shown.
    pub utc_offset_min: i32,
}

impl Style {
    fn t<'a>(&self, en: &'a str, ja: &'a str) -> &'a str {
        match self.lang {
            Language::En => en,
            Language::Ja => ja,
        }
    }

    fn en(&self) -> bool {
        self.lang == Language::En
    }

    /// `2026-11-27 11:25:57 UTC` (or `UTC+09:00`).
    pub fn time(&self, at: UnixMs) -> String {
        let shifted = at as i64 + i64::from(self.utc_offset_min) * 60_000;
        let t = UNIX_EPOCH + Duration::from_millis(shifted.max(0) as u64);
        let s = humantime::format_rfc3339_seconds(t).to_string();
        let zone = if self.utc_offset_min == 0 {
            "UTC".to_owned()
        } else {
            let m = self.utc_offset_min.abs();
            let sign = if self.utc_offset_min < 0 { '-' } else { '+' };
            format!("UTC{sign}{:02}:{:02}", m / 60, m % 60)
        };
        format!("{} {} {zone}", &s[..10], &s[11..19])
    }

    /// `90s`, `5m`, `2h`, `30d` (or `5分`).
    pub fn span(&self, ms: u64) -> String {
        let s = ms / 1000;
        let (n, en, ja) = if s.is_multiple_of(86_400) && s > 0 {
            (s / 86_400, "d", "日")
        } else if s.is_multiple_of(3600) && s > 0 {
            (s / 3600, "h", "時間")
        } else if s.is_multiple_of(60) && s > 0 {
            (s / 60, "m", "分")
        } else {
            (s, "s", "秒")
        };
        format!("{n}{}", self.t(en, ja))
    }
}

fn header(text: &str) -> SlackBlock {
    // Slack cuts header text at 150 characters.
    let text: String = text.chars().take(150).collect();
    SlackHeaderBlock::new(pt!(text)).into()
}

fn section(text: String) -> SlackBlock {
    SlackSectionBlock::new().with_text(md!(text)).into()
}

fn fields(pairs: Vec<(String, String)>) -> SlackBlock {
    let fields = pairs
        .into_iter()
        .map(|(k, v)| md!(format!("*{k}*\n{v}")))
        .collect();
    SlackSectionBlock::new().with_fields(fields).into()
}

fn context(text: String) -> SlackBlock {
    SlackContextBlock::new(vec![md!(text)]).into()
}

fn message(text: String, mut blocks: Vec<SlackBlock>, key: &str) -> SlackMessageContent {
    blocks.push(context(format!("fleet-broker · ref `{key}`")));
    SlackMessageContent::new()
        .with_text(text)
        .with_blocks(blocks)
}

/// Bullet lines in sections of at most [`LINES_PER_SECTION`].
fn listing(lines: Vec<String>) -> Vec<SlackBlock> {
    lines
        .chunks(LINES_PER_SECTION)
        .map(|c| section(c.join("\n")))
        .collect()
}

/// Counts per label, most frequent first: `BRAKE_SENSOR 20, MOTOR 3`.
fn tally<'a>(labels: impl Iterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for l in labels {
        match counts.iter_mut().find(|(k, _)| *k == l) {
            Some((_, n)) => *n += 1,
            None => counts.push((l, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn pct(x: f64) -> String {
    format!("{:.2} %", x * 100.0)
}

fn service_in_hint(style: &Style, vehicle: &str) -> String {
    let cmd = format!(
        "`fleet-broker vehicles service-in {vehicle} --operator NAME --note \"what was done\"`"
    );
    if style.en() {
        format!("*What to do:* check the vehicle in the field. Once it is fixed, put it back in service with {cmd} (or `POST /api/v1/vehicles/{vehicle}/service-in`). Heartbeats do not bring it back on their own.")
    } else {
        format!("*対応:* 現地で車両を点検してください。修理後、{cmd}（または `POST /api/v1/vehicles/{vehicle}/service-in`）で運用に戻してください。ハートビートだけでは自動で戻りません。")
    }
}

/// A message for one notice.
pub fn single(n: &Notice, style: &Style, key: &str) -> SlackMessageContent {
    match n {
        Notice::HardwareFault {
            vehicle,
            code,
            reports,
            window_ms,
            model,
            battery,
            at,
        } => {
            let title = if style.en() {
                format!("🔧 {vehicle} out of service: hardware fault {code}")
            } else {
                format!("🔧 {vehicle} を運用停止: ハードウェア故障 {code}")
            };
            let unknown = style.t("unknown", "不明");
            let blocks = vec![
                header(&title),
                fields(vec![
                    (style.t("Vehicle", "車両").into(), format!("`{vehicle}`")),
                    (style.t("Fault", "故障コード").into(), code.clone()),
                    (
                        style.t("Reports", "報告回数").into(),
                        if style.en() {
                            format!("{reports} within {}", style.span(*window_ms))
                        } else {
                            format!("{} 以内に {reports} 回", style.span(*window_ms))
                        },
                    ),
                    (style.t("Last seen", "最終通信").into(), style.time(*at)),
                    (
                        style.t("Battery", "バッテリー").into(),
                        battery.map_or(unknown.to_owned(), |b| format!("{b} %")),
                    ),
                    (
                        style.t("Model", "モデル").into(),
                        model.clone().unwrap_or_else(|| unknown.to_owned()),
                    ),
                ]),
                section(service_in_hint(style, vehicle)),
            ];
            message(title, blocks, key)
        }
        Notice::JourneyFailures { vehicle, .. } => {
            let title = if style.en() {
                format!("🔒 {vehicle} out of service: {}", journey_line(style, n))
            } else {
                format!("🔒 {vehicle} を運用停止: {}", journey_line(style, n))
            };
            let blocks = vec![
                header(&title),
                section(journey_hint(style, n, Some(vehicle))),
            ];
            message(title, blocks, key)
        }
        Notice::Flapping {
            vehicle,
            flips,
            window_ms,
            ..
        } => {
            let title = if style.en() {
                format!(
                    "〰️ {vehicle} keeps dropping off: {flips} heartbeat losses within {}",
                    style.span(*window_ms)
                )
            } else {
                format!(
                    "〰️ {vehicle} の通信が不安定: {} 以内にハートビート途絶 {flips} 回",
                    style.span(*window_ms)
                )
            };
            let body = style.t(
                "It goes out of service each time it falls silent and back when it talks again. This is reported once per episode. *What to do:* check its connectivity (SIM, antenna, firmware) if it goes on.",
                "無通信のたびに運用停止し、通信が戻ると復帰します（この通知は1回のみ）。*対応:* 続く場合は通信系（SIM、アンテナ、ファームウェア）を点検してください。",
            );
            message(
                title.clone(),
                vec![header(&title), section(body.into())],
                key,
            )
        }
        Notice::Manual { .. } => group("manual", &[n], style, key),
        Notice::MassLossStarted {
            silent,
            fleet,
            threshold,
            sample,
            holding,
            at,
            ..
        } => {
            let title = if style.en() {
                format!("🚨 Mass heartbeat loss: {silent} of {fleet} vehicles went silent")
            } else {
                format!("🚨 大規模な通信途絶: {fleet} 台中 {silent} 台が無通信")
            };
            let action = match (holding, style.en()) {
                (true, true) => "Automatic service-outs are *held* until the wave ends (the silent vehicles still count as bad in the SLI).",
                (false, true) => "Vehicles are taken out of service as usual (`mass_loss.action = \"service_out\"`).",
                (true, false) => "自動の運用停止は収束まで*保留*しています（無通信の車両は SLI 上は不良として数えます）。",
                (false, false) => "通常どおり運用停止しています（`mass_loss.action = \"service_out\"`）。",
            };
            let shown: Vec<String> = sample
                .iter()
                .take(SAMPLE_SHOWN)
                .map(|v| format!("`{v}`"))
                .collect();
            let body = if style.en() {
                format!("Started {} — more than the threshold of {threshold} at once: this looks like a platform or network incident, not {silent} broken vehicles. {action}\n*What to do:* check the MQTT endpoint and load balancer, the cellular provider's status, and the broker's `/readyz` and `/metrics`.", style.time(*at))
            } else {
                format!("{} 開始 — しきい値 {threshold} 台を超える同時途絶のため、{silent} 台の故障ではなくプラットフォームまたはネットワーク障害とみなします。{action}\n*対応:* MQTT エンドポイントとロードバランサー、通信事業者の障害情報、ブローカーの `/readyz` と `/metrics` を確認してください。", style.time(*at))
            };
            let blocks = vec![
                header(&title),
                section(body),
                section(format!(
                    "{}: {}",
                    style.t("Some of them", "対象の例"),
                    shown.join(", ")
                )),
            ];
            message(title, blocks, key)
        }
        Notice::MassLossEnded {
            recovered,
            still_silent,
            at,
            ..
        } => {
            let title = if style.en() {
                format!("✅ Mass heartbeat loss over: {recovered} vehicles came back")
            } else {
                format!("✅ 大規模な通信途絶が収束: {recovered} 台が復帰")
            };
            let body = if style.en() {
                format!("Ended {}. {still_silent} vehicles are still silent and now taken out of service as usual.", style.time(*at))
            } else {
                format!(
                    "{} に収束。無通信のままの {still_silent} 台は通常どおり運用停止しました。",
                    style.time(*at)
                )
            };
            message(title.clone(), vec![header(&title), section(body)], key)
        }
        Notice::BlindStarted { since, .. } => {
            let title = style.t(
                "🙈 The broker cannot see the fleet: its link to the upstream MQTT broker is down",
                "🙈 ブローカーが車両を観測できません: 上流 MQTT ブローカーとの接続断",
            );
            let body = if style.en() {
                format!("Since {}. No heartbeat can reach the broker, so *no vehicle is taken out of service* for silence meanwhile; the time counts as broker downtime in the SLI. Once the link is back, every vehicle gets the restart grace.\n*What to do:* check the upstream broker (`[mqtt.attach] url`), its credentials for the broker's client, and the network between them; `/readyz` shows the link.", style.time(*since))
            } else {
                format!("{} から。ハートビートが届かないため、その間は無通信による*運用停止を行いません*。この時間は SLI 上ブローカー停止時間として数えます。接続が戻ると全車両に再起動猶予を与えます。\n*対応:* 上流ブローカー（`[mqtt.attach] url`）、ブローカー用クライアントの認証情報、両者間のネットワークを確認してください。接続状態は `/readyz` に出ます。", style.time(*since))
            };
            message(title.into(), vec![header(title), section(body)], key)
        }
        Notice::BlindEnded { blind_ms, at, .. } => {
            let title = if style.en() {
                format!(
                    "✅ The broker sees the fleet again after {}",
                    style.span(*blind_ms)
                )
            } else {
                format!("✅ {} ぶりに車両の観測が復旧", style.span(*blind_ms))
            };
            let body = if style.en() {
                format!("Link back {}. Heartbeat deadlines resume with the restart grace counted from now.", style.time(*at))
            } else {
                format!(
                    "{} に接続が復旧。ハートビートの期限は今から再起動猶予付きで再開します。",
                    style.time(*at)
                )
            };
            message(title.clone(), vec![header(&title), section(body)], key)
        }
        Notice::SloAlert {
            journey,
            page,
            firing,
            burn,
            window_sli,
            target,
            window_ms,
            budget_remaining,
            at,
            ..
        } => slo_alert(
            style,
            key,
            journey.as_deref(),
            (*page, *firing),
            burn,
            (*window_sli, *target, *window_ms, *budget_remaining, *at),
        ),
        Notice::Digest(d) => digest(d, style, key),
    }
}

/// "unlock failed 3 times within 1h", for one journey-failures notice.
fn journey_line(style: &Style, n: &Notice) -> String {
    let Notice::JourneyFailures {
        journey,
        failures,
        window_ms,
        ..
    } = n
    else {
        return String::new();
    };
    if style.en() {
        format!(
            "{journey} failed {failures} times within {}",
            style.span(*window_ms)
        )
    } else {
        format!(
            "{} 以内に {journey} が {failures} 回失敗",
            style.span(*window_ms)
        )
    }
}

/// What to do about vehicles whose journeys keep failing (`vehicle` for one of them).
fn journey_hint(style: &Style, n: &Notice, vehicle: Option<&str>) -> String {
    let manual = matches!(n, Notice::JourneyFailures { manual: true, .. });
    let check = match (vehicle, style.en()) {
        (Some(v), true) => format!("its requests were not answered, or answered with a failure, while it was in service. *What to do:* check `{v}`'s lock in the field"),
        (None, true) => "their requests were not answered, or answered with a failure, while they were in service. *What to do:* check their locks in the field".to_owned(),
        (Some(v), false) => format!("運用中にもかかわらず要求に応答がないか、失敗が返りました。*対応:* `{v}` のロックを現地で点検してください"),
        (None, false) => "運用中にもかかわらず要求に応答がないか、失敗が返りました。*対応:* 各車両のロックを現地で点検してください".to_owned(),
    };
    let back = match (manual, style.en()) {
        (true, true) => "; once fixed, put it back with `fleet-broker vehicles service-in ID --operator NAME --note \"what was done\"` (it does not come back on its own).",
        (false, true) => "; its next successful answer brings it back (a test request from the backend will do), or a person with `fleet-broker vehicles service-in ID`.",
        (true, false) => "。修理後に `fleet-broker vehicles service-in ID --operator NAME --note \"対応内容\"` で運用に戻してください（自動では戻りません）。",
        (false, false) => "。次の成功応答で自動的に戻ります（バックエンドからのテスト要求でも可）。`fleet-broker vehicles service-in ID` でも戻せます。",
    };
    format!("{check}{back}")
}

fn slo_alert(
    style: &Style,
    key: &str,
    journey: Option<&str>,
    (page, firing): (bool, bool),
    burn: &[(String, f64)],
    (sli, target, window_ms, budget, at): (f64, f64, u64, f64, UnixMs),
) -> SlackMessageContent {
    let label = if page { "PAGE" } else { "TICKET" };
    if let Some(journey) = journey {
        return journey_alert(
            style,
            key,
            journey,
            (label, firing),
            burn,
            (sli, target, window_ms, budget, at),
        );
    }
    let title = match (firing, style.en()) {
        (true, true) if page => format!("🔥 {label}: the fleet is burning its error budget fast"),
        (true, true) => format!("⚠️ {label}: the fleet is burning its error budget"),
        (false, true) => {
            format!("✅ Resolved {label}: the error budget burn is back under the threshold")
        }
        (true, false) if page => format!("🔥 {label}: エラーバジェットを急速に消費中"),
        (true, false) => format!("⚠️ {label}: エラーバジェットを消費中"),
        (false, false) => format!("✅ {label} 解消: バジェット消費がしきい値を下回りました"),
    };
    let rates = burn
        .iter()
        .map(|(w, r)| format!("{w} {r:.1}×"))
        .collect::<Vec<_>>()
        .join(" · ");
    let policy = if page {
        style.t(
            "page when 1h and 5m both burn above 14.4×, or 6h and 30m above 6×",
            "1h と 5m がともに 14.4× 超、または 6h と 30m がともに 6× 超で PAGE",
        )
    } else {
        style.t(
            "ticket when 3d and 6h both burn above 1×",
            "3d と 6h がともに 1× 超で TICKET",
        )
    };
    let body = if style.en() {
        format!("{}: SLI over {} is {} (target {}), {} of the error budget left.\nBurn rates: {rates} ({policy}).", style.time(at), style.span(window_ms), pct(sli), pct(target), pct(budget))
    } else {
        format!("{}: 直近 {} の SLI {}（目標 {}）、エラーバジェット残り {}。\nバーンレート: {rates}（{policy}）。", style.time(at), style.span(window_ms), pct(sli), pct(target), pct(budget))
    };
    let mut blocks = vec![header(&title), section(body)];
    if firing {
        blocks.push(section(style.t(
            "*What to do:* see which reasons keep vehicles out: `fleet-broker vehicles list --state out_of_service` and `fleet-broker slo`; a mass heartbeat loss points at the network, many hardware faults at a batch of vehicles.",
            "*対応:* 運用停止の理由を確認してください: `fleet-broker vehicles list --state out_of_service` と `fleet-broker slo`。大規模な通信途絶ならネットワーク、故障の多発なら特定ロットの車両を疑ってください。",
        ).into()));
    }
    message(title, blocks, key)
}

/// A journey SLO's burn-rate alert.
fn journey_alert(
    style: &Style,
    key: &str,
    journey: &str,
    (label, firing): (&str, bool),
    burn: &[(String, f64)],
    (sli, target, window_ms, budget, at): (f64, f64, u64, f64, UnixMs),
) -> SlackMessageContent {
    let title = match (firing, style.en()) {
        (true, true) => {
            format!("🔒 {label}: {journey} requests are failing: their error budget is burning")
        }
        (false, true) => {
            format!("✅ Resolved {label}: {journey} requests are back under the burn threshold")
        }
        (true, false) => format!("🔒 {label}: {journey} の失敗でエラーバジェットを消費中"),
        (false, false) => {
            format!("✅ {label} 解消: {journey} のバジェット消費がしきい値を下回りました")
        }
    };
    let rates = burn
        .iter()
        .map(|(w, r)| format!("{w} {r:.1}×"))
        .collect::<Vec<_>>()
        .join(" · ");
    let body = if style.en() {
        format!("{}: {journey} answered with success in time: {} over {} (target {}), {} of the error budget left.\nBurn rates: {rates}.", style.time(at), pct(sli), style.span(window_ms), pct(target), pct(budget))
    } else {
        format!("{}: 直近 {} の {journey} 成功率 {}（目標 {}）、エラーバジェット残り {}。\nバーンレート: {rates}。", style.time(at), style.span(window_ms), pct(sli), pct(target), pct(budget))
    };
    let mut blocks = vec![header(&title), section(body)];
    if firing {
        blocks.push(section(style.t(
            "*What to do:* `GET /api/v1/slo` shows each journey's precision figures: failures to in-service vehicles point at vehicles the rules missed (or the backend and network), failures to out-of-service ones at an app that lets riders try vehicles taken out.",
            "*対応:* `GET /api/v1/slo` で各ジャーニーの精度を確認してください。運用中の車両での失敗はルールが見逃した故障（またはバックエンドや通信）、運用停止中の車両での失敗はアプリが停止車両の利用を許していることを示します。",
        ).into()));
    }
    message(title, blocks, key)
}

/// A message for several notices of one groupable kind (at most
/// [`VEHICLES_PER_MESSAGE`]).
pub fn group(kind: &str, notices: &[&Notice], style: &Style, key: &str) -> SlackMessageContent {
    if notices.len() == 1 && kind != "manual" {
        return single(notices[0], style, key);
    }
    let n = notices.len();
    let first = notices.iter().map(|x| x.at()).min().unwrap_or(0);
    let last = notices.iter().map(|x| x.at()).max().unwrap_or(0);
    let when = if first == last {
        style.time(first)
    } else {
        format!("{} – {}", style.time(first), style.time(last))
    };
    let unknown = style.t("unknown", "不明");
    match kind {
        "hardware_fault" => {
            let codes = tally(notices.iter().filter_map(|x| match x {
                Notice::HardwareFault { code, .. } => Some(code.as_str()),
                _ => None,
            }));
            let lines = notices
                .iter()
                .filter_map(|x| match x {
                    Notice::HardwareFault {
                        vehicle,
                        code,
                        reports,
                        window_ms,
                        model,
                        battery,
                        ..
                    } => Some(format!(
                        "• `{vehicle}` {code} · {} · {} {} · {}",
                        if style.en() {
                            format!("{reports} reports in {}", style.span(*window_ms))
                        } else {
                            format!("{} 以内に {reports} 回", style.span(*window_ms))
                        },
                        style.t("battery", "バッテリー"),
                        battery.map_or(unknown.to_owned(), |b| format!("{b} %")),
                        model.as_deref().unwrap_or(unknown)
                    )),
                    _ => None,
                })
                .collect();
            let title = if style.en() {
                format!("🔧 {n} vehicles out of service: hardware faults")
            } else {
                format!("🔧 {n} 台を運用停止: ハードウェア故障")
            };
            let mut blocks = vec![
                header(&title),
                section(format!(
                    "{} {codes} · {when}",
                    style.t("By code:", "コード別:")
                )),
            ];
            blocks.extend(listing(lines));
            blocks.push(section(style.t(
                "*What to do:* check each vehicle in the field. Once fixed, put it back with `fleet-broker vehicles service-in ID --operator NAME --note \"what was done\"`. Heartbeats do not bring them back on their own.",
                "*対応:* 各車両を現地で点検し、修理後に `fleet-broker vehicles service-in ID --operator NAME --note \"対応内容\"` で運用に戻してください。ハートビートだけでは自動で戻りません。",
            ).into()));
            message(title, blocks, key)
        }
        "journey_failures" => {
            let lines = notices
                .iter()
                .filter_map(|x| match x {
                    Notice::JourneyFailures {
                        vehicle,
                        model,
                        battery,
                        ..
                    } => Some(format!(
                        "• `{vehicle}` {} · {} {} · {}",
                        journey_line(style, x),
                        style.t("battery", "バッテリー"),
                        battery.map_or(unknown.to_owned(), |b| format!("{b} %")),
                        model.as_deref().unwrap_or(unknown)
                    )),
                    _ => None,
                })
                .collect();
            let title = if style.en() {
                format!("🔒 {n} vehicles out of service: journeys keep failing")
            } else {
                format!("🔒 {n} 台を運用停止: 操作の失敗が続いています")
            };
            let mut blocks = vec![header(&title), section(when.clone())];
            blocks.extend(listing(lines));
            blocks.push(section(journey_hint(style, notices[0], None)));
            message(title, blocks, key)
        }
        "flapping" => {
            let lines = notices
                .iter()
                .filter_map(|x| match x {
                    Notice::Flapping {
                        vehicle,
                        flips,
                        window_ms,
                        ..
                    } => Some(if style.en() {
                        format!(
                            "• `{vehicle}` {flips} heartbeat losses within {}",
                            style.span(*window_ms)
                        )
                    } else {
                        format!(
                            "• `{vehicle}` {} 以内に途絶 {flips} 回",
                            style.span(*window_ms)
                        )
                    }),
                    _ => None,
                })
                .collect();
            let title = if style.en() {
                format!("〰️ {n} vehicles keep dropping off")
            } else {
                format!("〰️ {n} 台の通信が不安定")
            };
            let mut blocks = vec![header(&title), section(when)];
            blocks.extend(listing(lines));
            blocks.push(section(style.t(
                "Each goes out of service when it falls silent and back when it talks. *What to do:* check connectivity (SIM, antenna, firmware) of the ones that go on; many at once in one area points at the cellular network.",
                "無通信のたびに運用停止し、通信が戻ると復帰します。*対応:* 続く車両は通信系（SIM、アンテナ、ファームウェア）を点検してください。同じ地域で多発する場合は通信網を疑ってください。",
            ).into()));
            message(title, blocks, key)
        }
        _ => {
            let lines: Vec<String> = notices
                .iter()
                .filter_map(|x| match x {
                    Notice::Manual {
                        vehicle,
                        out,
                        operator,
                        note,
                        still_out_for,
                        at,
                    } => Some(manual_line(
                        style,
                        vehicle,
                        *out,
                        operator,
                        note,
                        still_out_for,
                        *at,
                    )),
                    _ => None,
                })
                .collect();
            let title = if style.en() {
                if n == 1 {
                    "🧑‍🔧 Service changed by a person".to_owned()
                } else {
                    format!("🧑‍🔧 {n} service changes by people")
                }
            } else {
                format!("🧑‍🔧 手動の運用変更 {n} 件")
            };
            let mut blocks = vec![header(&title)];
            blocks.extend(listing(lines.clone()));
            message(format!("{title}: {}", lines.join(" ")), blocks, key)
        }
    }
}

fn manual_line(
    style: &Style,
    vehicle: &str,
    out: bool,
    operator: &str,
    note: &str,
    still_out_for: &[String],
    at: UnixMs,
) -> String {
    let time = style.time(at);
    let note = if note.is_empty() {
        String::new()
    } else {
        format!(" — “{}”", note.replace('\n', " "))
    };
    let tail = if !out && !still_out_for.is_empty() {
        if style.en() {
            format!(
                " (still out of service: {}; it comes back when it talks again)",
                still_out_for.join(", ")
            )
        } else {
            format!(
                "（{} のため運用停止のまま。通信が戻ると復帰します）",
                still_out_for.join(", ")
            )
        }
    } else {
        String::new()
    };
    match (out, style.en()) {
        (true, true) => format!("• {operator} took `{vehicle}` out of service{note} · {time}"),
        (false, true) => {
            format!("• {operator} put `{vehicle}` back in service{note}{tail} · {time}")
        }
        (true, false) => format!("• {operator} が `{vehicle}` を運用停止{note} · {time}"),
        (false, false) => {
            format!("• {operator} が `{vehicle}` を運用に戻しました{note}{tail} · {time}")
        }
    }
}

/// The original message of a resolved incident or alert, marked resolved (bot token:
/// `chat.update`).
pub fn mark_resolved(
    original: &SlackMessageContent,
    at: UnixMs,
    style: &Style,
) -> SlackMessageContent {
    let mut content = original.clone();
    let note = if style.en() {
        format!("✅ *Resolved* {} — see the thread", style.time(at))
    } else {
        format!("✅ *解消* {} — スレッドを参照", style.time(at))
    };
    let mut blocks = content.blocks.take().unwrap_or_default();
    blocks.insert(0, context(note.clone()));
    content.blocks = Some(blocks);
    content.text = Some(format!("{note} {}", content.text.unwrap_or_default()));
    content
}

/// The daily digest in plain words.
pub fn digest(d: &Digest, style: &Style, key: &str) -> SlackMessageContent {
    let title = if style.en() {
        format!("📊 Fleet reliability, day ending {}", style.time(d.at))
    } else {
        format!(
            "📊 フリート稼働率 日次レポート（{} まで）",
            style.time(d.at)
        )
    };
    let mut lines = Vec::new();
    if style.en() {
        lines.push(format!(
            "*In service over the last 24 hours:* {} of vehicle-time (target {}).",
            pct(d.day_sli),
            pct(d.target)
        ));
        lines.push(format!(
            "*Error budget:* {} left over {}; the last day used {} of it.",
            pct(d.budget_remaining),
            style.span(d.window_ms),
            pct(d.day_budget_used)
        ));
    } else {
        lines.push(format!(
            "*直近24時間の稼働率:* {}（目標 {}）。",
            pct(d.day_sli),
            pct(d.target)
        ));
        lines.push(format!(
            "*エラーバジェット:* {} 期間で残り {}。この1日で {} を消費。",
            style.span(d.window_ms),
            pct(d.budget_remaining),
            pct(d.day_budget_used)
        ));
    }
    let causes = d.causes(style.en());
    lines.push(format!(
        "*{}* {}",
        style.t("What took vehicles out:", "運用停止の内訳:"),
        if causes.is_empty() {
            style
                .t("nothing — a quiet day.", "なし（平穏な1日でした）。")
                .to_owned()
        } else {
            causes
        }
    ));
    if let Some((hour, sli)) = d.worst_hour {
        lines.push(if style.en() {
            format!(
                "*Worst hour:* from {} ({} in service).",
                style.time(hour),
                pct(sli)
            )
        } else {
            format!(
                "*最も悪かった1時間:* {} から（稼働率 {}）。",
                style.time(hour),
                pct(sli)
            )
        });
    }
    for (journey, good, valid) in d.journeys.iter().filter(|(_, _, v)| *v > 0) {
        let share = pct(*good as f64 / *valid as f64);
        lines.push(if style.en() {
            format!("*Riders' {journey}:* {share} of {valid} requests answered ok in time.")
        } else {
            format!("*利用者の {journey}:* {valid} 件中 {share} が期限内に成功。")
        });
    }
    if d.downtime_ms > 0 {
        lines.push(if style.en() {
            format!(
                "*Broker downtime:* {} (counted in the figures above).",
                style.span(d.downtime_ms)
            )
        } else {
            format!(
                "*ブローカー停止時間:* {}（上の数値に含みます）。",
                style.span(d.downtime_ms)
            )
        });
    }
    let text = format!("{title}: {}", pct(d.day_sli));
    message(text, vec![header(&title), section(lines.join("\n"))], key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EN: Style = Style {
        lang: Language::En,
        utc_offset_min: 0,
    };
    const JA: Style = Style {
        lang: Language::Ja,
        utc_offset_min: 9 * 60,
    };

    fn fault(vehicle: &str, code: &str) -> Notice {
        Notice::HardwareFault {
            vehicle: vehicle.into(),
            code: code.into(),
            reports: 3,
            window_ms: 60_000,
            model: Some("e-bike".into()),
            battery: Some(54),
            at: 1_764_242_757_000,
        }
    }

    fn json(c: &SlackMessageContent) -> String {
        serde_json::to_string(c).unwrap_or_default()
    }

    #[test]
    fn times_are_shown_in_the_configured_zone() {
        assert_eq!(EN.time(1_764_242_757_000), "2025-11-27 11:25:57 UTC");
        assert_eq!(JA.time(1_764_242_757_000), "2025-11-27 20:25:57 UTC+09:00");
        assert_eq!(EN.span(60_000), "1m");
        assert_eq!(JA.span(2 * 3_600_000), "2時間");
        assert_eq!(EN.span(90_000), "90s");
    }

    #[test]
    fn a_single_fault_names_vehicle_code_reports_battery_model_and_the_next_step() {
        let m = single(
            &fault("scooter-17", "BRAKE_SENSOR"),
            &EN,
            "hardware_fault-1",
        );
        let j = json(&m);
        for expected in [
            "scooter-17",
            "BRAKE_SENSOR",
            "3 within 1m",
            "54 %",
            "e-bike",
            "2025-11-27 11:25:57 UTC",
            "service-in scooter-17",
            "hardware_fault-1",
        ] {
            assert!(j.contains(expected), "{expected} missing from {j}");
        }
        assert!(m.text.as_deref().unwrap_or("").contains("scooter-17"));
    }

    fn jammed(vehicle: &str, manual: bool) -> Notice {
        Notice::JourneyFailures {
            vehicle: vehicle.into(),
            journey: "unlock".into(),
            failures: 3,
            window_ms: 3_600_000,
            manual,
            model: Some("e-scooter".into()),
            battery: Some(80),
            at: 1_764_242_757_000,
        }
    }

    #[test]
    fn failing_unlocks_say_which_vehicle_how_often_and_how_it_comes_back() {
        let j = json(&single(
            &jammed("scooter-3", true),
            &EN,
            "journey_failures-1",
        ));
        for expected in [
            "scooter-3",
            "unlock failed 3 times within 1h",
            "check `scooter-3`'s lock",
            "service-in ID",
            "does not come back on its own",
        ] {
            assert!(j.contains(expected), "{expected} missing from {j}");
        }
        let j = json(&single(&jammed("scooter-3", false), &JA, "k"));
        assert!(j.contains("次の成功応答で自動的に戻ります"), "{j}");
        let (a, b) = (jammed("a-1", false), jammed("b-2", false));
        let j = json(&group("journey_failures", &[&a, &b], &EN, "k"));
        for expected in [
            "2 vehicles out of service",
            "`a-1`",
            "`b-2`",
            "80 %",
            "e-scooter",
        ] {
            assert!(j.contains(expected), "{expected} missing from {j}");
        }
    }

    #[test]
    fn a_journey_alert_names_the_journey_and_points_at_the_precision_figures() {
        let burn = vec![("5m".to_owned(), 20.0), ("1h".to_owned(), 16.0)];
        let j = json(&slo_alert(
            &EN,
            "k",
            Some("unlock"),
            (true, true),
            &burn,
            (0.9, 0.99, 86_400_000, -9.0, 1_764_242_757_000),
        ));
        for expected in [
            "PAGE: unlock requests are failing",
            "90.00 %",
            "precision",
            "5m 20.0×",
        ] {
            assert!(j.contains(expected), "{expected} missing from {j}");
        }
    }

    #[test]
    fn a_group_lists_every_vehicle_in_sections_slack_accepts() {
        let notices: Vec<Notice> = (0..VEHICLES_PER_MESSAGE)
            .map(|i| {
                fault(
                    &format!("v{i:04}"),
                    if i % 3 == 0 { "MOTOR" } else { "BRAKE_SENSOR" },
                )
            })
            .collect();
        let refs: Vec<&Notice> = notices.iter().collect();
        let m = group("hardware_fault", &refs, &EN, "k");
        let j = json(&m);
        for i in 0..VEHICLES_PER_MESSAGE {
            assert!(j.contains(&format!("`v{i:04}`")));
        }
        assert!(j.contains("BRAKE_SENSOR 66, MOTOR 34"));
        let blocks = m.blocks.unwrap_or_default();
        assert!(blocks.len() <= 50, "{} blocks", blocks.len());
        for b in &blocks {
            if let SlackBlock::Section(s) = b {
                if let Some(SlackBlockText::MarkDown(t)) = &s.text {
                    assert!(t.text.chars().count() <= 3000);
                }
            }
        }
    }

    #[test]
    fn japanese_messages_are_in_japanese() {
        let j = json(&single(&fault("v1", "MOTOR"), &JA, "k"));
        assert!(j.contains("運用停止"), "{j}");
        assert!(j.contains("バッテリー"));
        assert!(j.contains("20:25:57 UTC+09:00"));
    }

    #[test]
    fn a_service_in_that_leaves_the_vehicle_out_says_why() {
        let n = Notice::Manual {
            vehicle: "v9".into(),
            out: false,
            operator: "ana".into(),
            note: "brakes replaced".into(),
            still_out_for: vec!["heartbeat_lost".into()],
            at: 0,
        };
        let j = json(&single(&n, &EN, "k"));
        assert!(j.contains("ana put `v9` back in service"), "{j}");
        assert!(j.contains("still out of service: heartbeat_lost"));
    }

    #[test]
    fn marking_resolved_keeps_the_original_and_says_resolved_first() {
        let original = single(&fault("v1", "MOTOR"), &EN, "k");
        let updated = mark_resolved(&original, 0, &EN);
        let blocks = updated.blocks.clone().unwrap_or_default();
        assert_eq!(blocks.len(), original.blocks.unwrap_or_default().len() + 1);
        assert!(json(&updated).contains("Resolved"));
    }
}
