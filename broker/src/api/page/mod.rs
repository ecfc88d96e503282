//! The SLO page at `/`, for people who are not SREs: whether the fleet meets its
//! objective, in plain words first and numbers second; the fleet now; the history as
//! inline SVG; what each burn rate means and what to do; a glossary. English and Japanese
//! (`?lang=ja` or the browser's Accept-Language). Rendered by the server (maud) from the
//! engine's aggregates and the stored per-minute SLI history, never a per-vehicle scan;
//! a small inline script refreshes the figures from `/api/v1/slo` every 30 s.
//!
//! `/vehicles` (filters: state, reason, model) and `/vehicles/{id}` are the read-only
//! views for field technicians.

mod chart;
mod history;
mod text;
mod vehicles;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Html;
use fleet_rules::{AlertSeverity, SliReport};
use maud::{html, Markup, PreEscaped, DOCTYPE};
use serde::Deserialize;

use self::text::{Lang, Words};
use super::{ApiContext, ApiError};
use crate::engine::alerts::policy;
use crate::engine::EngineSnapshot;

pub use vehicles::{vehicle_page, vehicles_page};

/// Settings of the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSettings {
    /// Serve `/` and `/vehicles` (`[http] page`).
    pub enabled: bool,
    /// Offset from UTC of the times shown, in minutes (`[slack] utc_offset`).
    pub utc_offset_min: i32,
}

impl Default for PageSettings {
    fn default() -> Self {
        PageSettings {
            enabled: true,
            utc_offset_min: 0,
        }
    }
}

/// `?lang=`
#[derive(Debug, Deserialize, Default)]
pub struct LangQuery {
    lang: Option<String>,
}

/// The language: `?lang=` first, then the first of Accept-Language we speak.
fn language(query: &LangQuery, headers: &HeaderMap) -> Lang {
    if let Some(lang) = query.lang.as_deref().and_then(Lang::parse) {
        return lang;
    }
    headers
        .get(axum::http::header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|part| part.split(';').next())
                .find_map(|tag| Lang::parse(tag.trim()))
        })
        .unwrap_or(Lang::En)
}

/// The page's frame: head, style, the language switch, and the refresh script.
fn frame(w: &Words, title: &str, body: Markup) -> Html<String> {
    let markup = html! {
        (DOCTYPE)
        html lang=(w.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    a href={ "/?lang=" (w.lang.code()) } { (w.t("SLO", "SLO")) }
                    " · "
                    a href={ "/vehicles?lang=" (w.lang.code()) } { (w.t("Vehicles", "車両")) }
                    span.langs {
                        a href="?lang=en" lang="en" { "English" }
                        " · "
                        a href="?lang=ja" lang="ja" { "日本語" }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(markup.into_string())
}

/// `GET /`
pub async fn slo_page(
    State(ctx): State<Arc<ApiContext>>,
    Query(query): Query<LangQuery>,
    headers: HeaderMap,
) -> Result<Html<String>, ApiError> {
    let w = Words::new(language(&query, &headers), ctx.page.utc_offset_min);
    let s = ctx.engine.snapshot().await?;
    let history = history::load(&ctx.history, &s.sli).await;
    let body = html! {
        h1 { (w.t("Is the fleet rentable?", "車両は貸し出せる状態か")) }
        (headline(&w, &s.sli))
        (todo(&w, &s))
        (fleet_now(&w, &s))
        (history::render(&w, &history, &s.sli))
        (burn_rates(&w, &s.sli))
        (acks(&w, &s))
        (journeys(&w, &s))
        (glossary(&w))
        p.updated {
            (w.t("Updated", "更新")) " "
            span data-metric="at" data-format="time" data-offset=(ctx.page.utc_offset_min) { (w.time(s.sli.at)) }
            " · " a href="/api/v1/slo" { "JSON" }
        }
        script { (PreEscaped(SCRIPT)) }
    };
    Ok(frame(
        &w,
        w.t("Fleet reliability (SLO)", "車両の信頼性（SLO）"),
        body,
    ))
}

/// Rows of the fault-code and model tables.
const TOP: usize = 10;

/// A share as `99.62`.
fn pct(x: f64, digits: usize) -> String {
    format!("{:.*}", digits, x * 100.0)
}

fn headline(w: &Words, r: &SliReport) -> Markup {
    // While error budget is left the objective is met (the window's SLI alone says little
    // before the history covers the window).
    let meets = r.error_budget_remaining > 0.0;
    let fast = alarming(r, AlertSeverity::Page);
    let covered = r.covered_ms.min(r.window_ms);
    let span = if covered < r.window_ms {
        w.span_ms(covered)
    } else {
        w.span_ms(r.window_ms)
    };
    let runway = runway(w, r);
    html! {
        p.verdict.(if !meets { "bad" } else if fast { "warn" } else { "ok" }) data-testid="verdict" {
            @if !meets {
                (w.t("No: the fleet is below its objective.", "いいえ: 車両は目標を下回っています。"))
            } @else if fast {
                (w.t("For now: the fleet meets its objective, but it is spending the error budget fast.", "今のところは: 目標は満たしていますが、エラーバジェットを急速に消費しています。"))
            } @else {
                (w.t("Yes: the fleet meets its objective.", "はい: 車両は目標を満たしています。"))
            }
        }
        p.headline {
            @match w.lang {
                Lang::En => {
                    span data-metric="window_sli" data-format="pct2" { (pct(r.window_sli, 2)) } " % of vehicle-time was rentable over the last " (span)
                    "; the target is " span data-metric="target" data-format="pct2" { (pct(r.target, 2)) } " %. "
                    span data-metric="error_budget_remaining" data-format="pct0" { (pct(r.error_budget_remaining.max(0.0), 0)) } " % of the error budget is left"
                    (runway) "."
                }
                Lang::Ja => {
                    "直近" (span) "の車両時間のうち " span data-metric="window_sli" data-format="pct2" { (pct(r.window_sli, 2)) } " % が貸し出し可能でした（目標 "
                    span data-metric="target" data-format="pct2" { (pct(r.target, 2)) } " %）。エラーバジェットの残りは "
                    span data-metric="error_budget_remaining" data-format="pct0" { (pct(r.error_budget_remaining.max(0.0), 0)) } " %"
                    (runway) "。"
                }
            }
        }
        @if covered < r.window_ms {
            p.note data-testid="coverage" {
                @match w.lang {
                    Lang::En => { "The history covers only the last " (w.span_ms(covered)) " of the " (w.span_ms(r.window_ms)) " window (that is how long the broker has kept it): the figure is over " (w.span_ms(covered)) ", not " (w.span_ms(r.window_ms)) "." }
                    Lang::Ja => { "履歴は " (w.span_ms(r.window_ms)) " の期間のうち直近 " (w.span_ms(covered)) " 分しかありません（ブローカーが記録している期間）。数値は " (w.span_ms(r.window_ms)) " ではなく " (w.span_ms(covered)) " のものです。" }
                }
            }
        }
        @if r.downtime_ms > 0 {
            p.note {
                (w.t("The broker itself was down (or blind) for ", "ブローカー自身の停止（または観測不能）時間: "))
                span data-metric="downtime_s" data-format="span" { (w.span_ms(r.downtime_ms)) }
                (w.t(" within the window.", "（期間内）。"))
            }
        }
    }
}

/// ", which lasts about 9 days at today's rate" or why not.
fn runway(w: &Words, r: &SliReport) -> String {
    let rate = r.burn.d1;
    if r.error_budget_remaining <= 0.0 {
        w.t(
            ": it is spent, and every further out-of-service hour misses the objective",
            "。すでに使い切っており、これ以上の運用停止は目標未達になります",
        )
        .to_owned()
    } else if rate <= 0.0 {
        w.t(
            ", and none of it was spent in the last day",
            "。直近1日は消費していません",
        )
        .to_owned()
    } else {
        let ms = r.error_budget_remaining * r.window_ms as f64 / rate;
        let days = w.span_ms(ms as u64);
        match w.lang {
            Lang::En => format!(", which lasts about {days} at today's rate"),
            Lang::Ja => format!("。今日のペースではあと約{days}で尽きます"),
        }
    }
}

/// Whether the page (else ticket) alert fires, or its burn-rate condition holds now (the
/// alerts are evaluated once a minute).
fn alarming(r: &SliReport, severity: AlertSeverity) -> bool {
    r.burn.breaches(severity) || r.alerts_firing.contains(&severity)
}

fn todo(w: &Words, s: &EngineSnapshot) -> Markup {
    html! {
        section {
            h2 { (w.t("What to do", "やること")) }
            @if alarming(&s.sli, AlertSeverity::Page) {
                p.bad { (w.t(
                    "Act now (page): the fleet is going out of service so fast that the whole error budget would be gone within days. Look at the vehicles out of service: if many went silent at once, it is the network or the platform, not the vehicles.",
                    "今すぐ対応（ページ）: このペースでは数日でエラーバジェットを使い切ります。運用停止中の車両を確認してください。多数が同時に無通信になった場合は、車両ではなくネットワークやプラットフォームの障害です。")) }
            } @else if alarming(&s.sli, AlertSeverity::Ticket) {
                p.warn { (w.t(
                    "This week (ticket): the budget is being spent a little faster than it refills. Look at the most common reasons below and plan repairs.",
                    "今週中に対応（チケット）: バジェットの消費が回復より少し速いペースです。下の主な理由を見て修理を計画してください。")) }
            } @else {
                p.ok { (w.t(
                    "Nothing urgent: the budget is not being spent faster than the objective allows.",
                    "急ぎの対応はありません: バジェットの消費は目標の範囲内です。")) }
            }
        }
    }
}

fn link(w: &Words, query: &str) -> String {
    format!("/vehicles?{query}&lang={}", w.lang.code())
}

fn fleet_now(w: &Words, s: &EngineSnapshot) -> Markup {
    let c = &s.census;
    let rows: [(&str, &str, &str, usize, String); 5] = [
        (
            "out_of_service",
            "Out of service",
            "運用停止中",
            c.out_of_service,
            link(w, "state=out_of_service"),
        ),
        (
            "heartbeat_lost",
            "  silent (heartbeat lost)",
            "  無通信",
            c.heartbeat_lost,
            link(w, "reason=heartbeat_lost"),
        ),
        (
            "hardware_fault",
            "  hardware fault",
            "  ハードウェア故障",
            c.hardware_fault,
            link(w, "reason=hardware_fault"),
        ),
        (
            "maintenance",
            "  maintenance",
            "  保守",
            c.maintenance,
            link(w, "reason=maintenance"),
        ),
        (
            "held",
            "Silent, held by a mass-loss incident",
            "大規模途絶で停止保留中",
            c.held,
            link(w, "state=in_service"),
        ),
    ];
    html! {
        section {
            h2 { (w.t("The fleet now", "現在の車両")) }
            p.big {
                span data-metric="in_service" data-format="int" { (c.in_service) }
                (w.t(" of ", " / "))
                span data-metric="total" data-format="int" { (c.total) }
                (w.t(" vehicles are in service", " 台が運用中"))
                " (" span data-metric="sli_now" data-format="pct2" { (pct(s.sli.fraction, 2)) } " %)"
            }
            table {
                @for (key, en, ja, n, href) in &rows {
                    tr {
                        td { a href=(href) { (w.t(en, ja)) } }
                        td.num { span data-metric=(key) data-format="int" { (n) } }
                    }
                }
            }
            @if !s.breakdown.fault_codes.is_empty() {
                h3 { (w.t("Most common hardware faults", "多いハードウェア故障")) }
                table data-testid="fault-codes" {
                    @for (code, n) in s.breakdown.fault_codes.iter().take(TOP) {
                        tr {
                            td { (code) }
                            td.num { (n) }
                        }
                    }
                }
            }
            @if s.breakdown.models.len() > 1 || s.breakdown.models.first().is_some_and(|m| m.0.is_some()) {
                h3 { (w.t("Per model", "モデル別")) }
                table data-testid="models" {
                    tr { th { (w.t("model", "モデル")) } th.num { (w.t("in service", "運用中")) } th.num { (w.t("vehicles", "台数")) } }
                    @for (model, ok, n) in s.breakdown.models.iter().take(TOP) {
                        tr {
                            td { @match model {
                                Some(m) => a href=(link(w, &format!("model={}", url_escape(m)))) { (m) },
                                None => (w.t("not reported", "未報告")),
                            } }
                            td.num { (ok) }
                            td.num { (n) }
                        }
                    }
                }
            }
            p.small { (w.t(
                "A vehicle can have several reasons at once; it returns to service only when none is left. Faults and maintenance need a person (service-in); a silent vehicle returns by itself when it talks again.",
                "1台に複数の理由が付くことがあり、すべて解消されたときに運用へ戻ります。故障と保守は人による運用再開が必要で、無通信の車両は通信が戻ると自動で復帰します。")) }
        }
    }
}

fn burn_rates(w: &Words, r: &SliReport) -> Markup {
    let b = &r.burn;
    let rows = [
        ("5m", b.m5),
        ("30m", b.m30),
        ("1h", b.h1),
        ("6h", b.h6),
        ("1d", b.d1),
        ("3d", b.d3),
    ];
    html! {
        section {
            h2 { (w.t("How fast the budget burns", "バジェットの消費速度（バーンレート）")) }
            p { (w.t(
                "A burn rate of 1 spends exactly the error budget over the window; 2 spends it in half the window; below 1 the objective holds.",
                "バーンレート 1 はちょうど期間内にバジェットを使い切る速さ、2 は半分の期間で使い切る速さです。1 未満なら目標は守られます。")) }
            table {
                tr { th { (w.t("over the last", "直近")) } th.num { (w.t("burn rate", "バーンレート")) } }
                @for (window, rate) in rows {
                    tr.(if rate > 1.0 { "bad" } else { "" }) {
                        td { (window) }
                        td.num { span data-metric={ "burn_" (window) } data-format="rate" { (format!("{rate:.2}")) } }
                    }
                }
            }
            ul {
                li { strong { (w.t("Page", "ページ")) } ": " (policy(AlertSeverity::Page)) ". "
                    (w.t("The budget would be gone in about two days: someone acts now.", "約2日でバジェットが尽きる速さ: すぐに対応します。")) }
                li { strong { (w.t("Ticket", "チケット")) } ": " (policy(AlertSeverity::Ticket)) ". "
                    (w.t("Slowly overspending: plan a fix this week.", "ゆっくりと使いすぎている状態: 今週中に対策を計画します。")) }
            }
        }
    }
}

fn acks(w: &Words, s: &EngineSnapshot) -> Markup {
    let a = &s.acks;
    html! {
        section {
            h2 { (w.t("Commands acknowledged in time", "コマンドの応答")) }
            p {
                span data-metric="ack_window_sli" data-format="pct2" { (pct(a.window_sli, 2)) }
                (w.t(" % of the commands to reachable vehicles were acknowledged in time (target ", " % のコマンドに期限内の応答がありました（目標 "))
                (pct(a.target, 2))
                (w.t(" %); ", " %）。"))
                span data-metric="unacked_commands" data-format="int" { (s.unacked_commands) }
                (w.t(" await an answer now.", " 件が応答待ちです。"))
            }
        }
    }
}

/// Each journey (an unlock) in plain words: the share that worked, and what the last day
/// says about the health model.
fn journeys(w: &Words, s: &EngineSnapshot) -> Markup {
    let last_day = |j: &fleet_rules::JourneyStatus, failed: bool, state: &str| -> u64 {
        j.precision
            .iter()
            .filter(|r| (r.outcome != "succeeded") == failed && r.state == state)
            .map(|r| r.last_day)
            .sum()
    };
    html! {
        @for j in &s.journeys {
            section.journey {
                h2 { (w.t("Rider journey: ", "利用者の操作: ")) (j.name) }
                p {
                    span data-metric={ "journey_" (j.name) "_window_sli" } data-format="pct2" { (pct(j.report.sli.window_sli, 2)) }
                    (w.t(" % of the requests were answered with success in time (target ", " % の要求が期限内に成功しました（目標 "))
                    (pct(j.report.sli.target, 2))
                    (w.t(" %).", " %）。"))
                }
                p {
                    (w.t("Over the last day: ", "直近1日: "))
                    strong { (last_day(j, true, "in_service")) }
                    (w.t(" failed on vehicles shown as in service (broken ones the rules missed); ", " 件が運用中と表示された車両で失敗（ルールが見逃した故障）、"))
                    strong { (last_day(j, true, "out_of_service") + last_day(j, false, "out_of_service")) }
                    (w.t(" went to vehicles that were out of service.", " 件が運用停止中の車両への要求でした。"))
                }
            }
        }
    }
}

fn glossary(w: &Words) -> Markup {
    let entries: [(&str, &str, &str); 4] = [
        (
            "SLI",
            "Service level indicator: the share of vehicle-time the fleet was in service (rentable), counted every minute.",
            "サービスレベル指標: 車両が運用中（貸し出し可能）だった時間の割合。毎分数えます。",
        ),
        (
            "SLO",
            "Service level objective: the share we promise, over a rolling window (here the target above).",
            "サービスレベル目標: 一定期間にわたって約束する割合（上の目標値）。",
        ),
        (
            "Error budget",
            "What the objective allows to be lost: with a 99.5 % target, 0.5 % of vehicle-time may be out of service. While budget is left, the fleet meets its objective.",
            "目標が許す損失の量。目標 99.5 % なら車両時間の 0.5 % まで運用停止してよく、残っている間は目標を満たしています。",
        ),
        (
            "Burn rate",
            "How fast the budget is being spent, relative to spending it exactly over the window (1 = on track to use it all).",
            "バジェットを消費する速さ。期間ちょうどで使い切る速さを 1 とします。",
        ),
    ];
    html! {
        section {
            h2 { (w.t("Glossary", "用語")) }
            dl {
                @for (term, en, ja) in entries {
                    dt { (match (w.lang, term) { (Lang::Ja, "Error budget") => "エラーバジェット", (Lang::Ja, "Burn rate") => "バーンレート", _ => term }) }
                    dd { (w.t(en, ja)) }
                }
            }
        }
    }
}

const STYLE: &str = "body{font:16px/1.5 system-ui,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}\
nav{padding:.5rem 1rem;background:#23395d;color:#fff}nav a{color:#fff}.langs{float:right}\
main{max-width:760px;margin:0 auto;padding:1rem}h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}\
.verdict{font-size:1.4rem;font-weight:600}.ok{color:#1d6b2f}.bad{color:#a1191c}.warn{color:#8a5a00}\
.headline{font-size:1.15rem}.note{background:#fff6d6;padding:.5rem}.big{font-size:1.3rem}.small{font-size:.9rem;color:#555}\
table{border-collapse:collapse}td,th{padding:.2rem .8rem;border-bottom:1px solid #ddd;text-align:left;white-space:pre}\
.num{text-align:right}.chart{width:100%;height:160px;background:#fff;border:1px solid #ddd}\
.bar{fill:#3b7dd8}.bar.under{fill:#d64545}.bar.none{fill:#bbb}.target{stroke:#222;stroke-dasharray:4 3}\
.updated{color:#555;font-size:.9rem}dt{font-weight:600}";

/// Refreshes every `[data-metric]` from `/api/v1/slo` at load and every 30 s (the page
/// stays put); marks the document `data-refreshed` when it did.
const SCRIPT: &str = r#"(function(){
function fmt(el,v){var f=el.getAttribute('data-format');
if(f==='pct2')return (v*100).toFixed(2);if(f==='pct0')return (Math.max(v,0)*100).toFixed(0);
if(f==='rate')return Number(v).toFixed(2);if(f==='int')return String(v);return null;}
function set(k,v){var els=document.querySelectorAll('[data-metric="'+k+'"]');
for(var i=0;i<els.length;i++){var t=fmt(els[i],v);if(t!==null)els[i].textContent=t;}}
function refresh(){fetch('/api/v1/slo').then(function(r){return r.ok?r.json():null;}).then(function(j){
if(!j)return;var f=j.fleet_in_service,v=j.vehicles;
set('window_sli',f.window_sli);set('target',f.target);set('error_budget_remaining',f.error_budget_remaining);
set('sli_now',f.sli_now);set('in_service',v.in_service);set('total',v.total);set('out_of_service',v.out_of_service);
set('heartbeat_lost',v.heartbeat_lost);set('hardware_fault',v.hardware_fault);set('maintenance',v.maintenance);
set('held',v.held);set('ack_window_sli',j.command_acks.window_sli);set('unacked_commands',j.command_acks.unacked_commands);
for(var k in f.burn_rates){set('burn_'+k,f.burn_rates[k]);}
document.documentElement.setAttribute('data-refreshed',String(j.at));}).catch(function(){});}
refresh();setInterval(refresh,30000);})();"#;

/// Percent-encodes what is not unreserved (vehicle ids are plain, model names may not be).
pub(super) fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
