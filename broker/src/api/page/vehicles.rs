//! `/vehicles` and `/vehicles/{id}`: read-only pages for field technicians, from the same
//! engine queries as the JSON API (a bounded page of the fleet; one vehicle with its
//! reasons, counters and recent history from the audit log).

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Html;
use fleet_rules::{PageCursor, Reason, ServiceState};
use maud::{html, Markup};

use super::text::{Lang, Words};
use super::{frame, language, url_escape, LangQuery};
use crate::api::paging::{collect_page, page_params};
use crate::api::params::{vehicle_id, Params, RawParams};
use crate::api::vehicles::vehicle_filter;
use crate::api::{ApiContext, ApiError};

fn state_text(w: &Words, s: ServiceState) -> &'static str {
    match s {
        ServiceState::InService => w.t("in service", "運用中"),
        ServiceState::OutOfService => w.t("out of service", "運用停止"),
    }
}

fn reason_text(w: &Words, r: &Reason) -> String {
    match r {
        Reason::HeartbeatLost { since } => {
            format!("{} {}", w.t("silent since", "無通信:"), w.time(*since))
        }
        Reason::HardwareFault { code, since } => format!(
            "{} {code} ({})",
            w.t("hardware fault", "ハードウェア故障"),
            w.time(*since)
        ),
        Reason::JourneyFailures {
            journey,
            failures,
            since,
        } => format!(
            "{} {journey} × {failures} ({})",
            w.t("failed journeys:", "操作失敗:"),
            w.time(*since)
        ),
        Reason::Maintenance { by, note, since } => format!(
            "{} {by}: {note} ({})",
            w.t("maintenance by", "保守:"),
            w.time(*since)
        ),
    }
}

fn lang_of(p: &Params, headers: &HeaderMap) -> Lang {
    let query = LangQuery {
        lang: p.get("lang").map(str::to_owned),
    };
    language(&query, headers)
}

/// `GET /vehicles?state=&reason=&model=&limit=&cursor=&lang=`
pub async fn vehicles_page(
    State(ctx): State<Arc<ApiContext>>,
    raw: RawParams,
    headers: HeaderMap,
) -> Result<Html<String>, ApiError> {
    let p = Params::parse(
        raw,
        &["state", "reason", "model", "limit", "cursor", "lang"],
    )?;
    let w = Words::new(lang_of(&p, &headers), ctx.page.utc_offset_min);
    let filter = vehicle_filter(&p)?;
    let (cursor, limit) = page_params(&p)?;
    let (vehicles, next) = collect_page(&ctx.engine, &filter, cursor, limit).await?;
    let keep = |extra: &str| -> String {
        let mut q: Vec<String> = ["state", "reason", "model"]
            .iter()
            .filter_map(|k| p.get(k).map(|v| format!("{k}={}", url_escape(v))))
            .collect();
        q.push(format!("lang={}", w.lang.code()));
        if !extra.is_empty() {
            q.push(extra.to_owned());
        }
        format!("/vehicles?{}", q.join("&"))
    };
    let body = html! {
        h1 { (w.t("Vehicles", "車両")) }
        form method="get" action="/vehicles" {
            input type="hidden" name="lang" value=(w.lang.code());
            label { (w.t("State", "状態")) " "
                select name="state" {
                    option value="" { (w.t("any", "すべて")) }
                    option value="in_service" selected[p.get("state") == Some("in_service")] { (w.t("in service", "運用中")) }
                    option value="out_of_service" selected[p.get("state") == Some("out_of_service")] { (w.t("out of service", "運用停止")) }
                }
            }
            " "
            label { (w.t("Reason", "理由")) " "
                select name="reason" {
                    option value="" { (w.t("any", "すべて")) }
                    @for (v, en, ja) in [("heartbeat_lost", "silent", "無通信"), ("hardware_fault", "hardware fault", "ハードウェア故障"), ("maintenance", "maintenance", "保守")] {
                        option value=(v) selected[p.get("reason") == Some(v)] { (w.t(en, ja)) }
                    }
                }
            }
            " "
            label { (w.t("Model", "モデル")) " " input name="model" value=(p.get("model").unwrap_or("")) size="12"; }
            " " button type="submit" { (w.t("Show", "表示")) }
        }
        table data-testid="vehicles" {
            tr { th { "ID" } th { (w.t("state", "状態")) } th { (w.t("why", "理由")) } th { (w.t("last heard", "最終通信")) } th { (w.t("model", "モデル")) } }
            @for v in &vehicles {
                tr {
                    td { a href={ "/vehicles/" (url_escape(&v.id)) "?lang=" (w.lang.code()) } { (v.id) } }
                    td { (state_text(&w, v.state)) @if v.held { " " (w.t("(held)", "（保留）")) } }
                    td { @for r in &v.reasons { (reason_text(&w, r)) br; } }
                    td { (w.time(v.last_seen)) }
                    td { (v.model.as_deref().unwrap_or("–")) }
                }
            }
        }
        @if vehicles.is_empty() { p { (w.t("No vehicle matches.", "該当する車両はありません。")) } }
        @if let Some(next) = next {
            p { a href=(keep(&format!("cursor={}", PageCursor::token(next)))) { (w.t("Next page", "次のページ")) } }
        }
    };
    Ok(frame(&w, w.t("Vehicles", "車両"), body))
}

/// `GET /vehicles/{id}?lang=`
pub async fn vehicle_page(
    State(ctx): State<Arc<ApiContext>>,
    path: Result<Path<String>, PathRejection>,
    raw: RawParams,
    headers: HeaderMap,
) -> Result<Html<String>, ApiError> {
    let p = Params::parse(raw, &["lang"])?;
    let w = Words::new(lang_of(&p, &headers), ctx.page.utc_offset_min);
    let id = vehicle_id(path)?;
    let v = ctx
        .engine
        .vehicle(&id)
        .await?
        .ok_or_else(|| ApiError::unknown_vehicle(&id))?;
    let transitions = ctx.history.transitions(Some(id.clone()), 20).await;
    let commands = ctx.history.commands(id.clone(), 10).await;
    let body: Markup = html! {
        h1 { (v.id) ": " (state_text(&w, v.state)) }
        @if v.reasons.is_empty() {
            p.ok { (w.t("Nothing keeps it out of service.", "運用停止の理由はありません。")) }
        } @else {
            ul { @for r in &v.reasons { li { (reason_text(&w, r)) } } }
            p.small { (w.t(
                "A fault or maintenance is cleared by a person: `fleet-broker vehicles service-in ID --operator NAME --note \"what was checked\"`. A silent vehicle returns by itself when it talks again.",
                "故障と保守は人が解除します: `fleet-broker vehicles service-in ID --operator 名前 --note \"点検内容\"`。無通信の車両は通信が戻ると自動で復帰します。")) }
        }
        table {
            tr { td { (w.t("Last heard", "最終通信")) } td { (w.time(v.last_seen)) } }
            tr { td { (w.t("Model", "モデル")) } td { (v.model.as_deref().unwrap_or("–")) } }
            tr { td { (w.t("Battery", "バッテリー")) } td { (v.battery.map_or("–".to_owned(), |b| format!("{b} %"))) } }
            tr { td { (w.t("Reports it applies", "車両側の状態")) } td { (v.reported.map_or("–", |s| state_text(&w, s))) } }
        }
        @if !v.error_counts.is_empty() {
            h2 { (w.t("Error reports", "エラー報告")) }
            table { @for (code, n) in &v.error_counts { tr { td { (code) } td.num { (n) } } } }
        }
        h2 { (w.t("History", "履歴")) }
        @match &transitions {
            Ok(ts) => {
                table { @for t in ts { tr {
                    td { (w.time(t.at)) }
                    td { (t.from) " → " (t.to) }
                    td { (t.change) " " (t.reason.as_ref().and_then(|r| r.get("kind")).and_then(|k| k.as_str()).unwrap_or("")) }
                    td { (t.operator.as_deref().unwrap_or("")) " " (t.note.as_deref().unwrap_or("")) }
                } } }
            }
            Err(e) => p.note { (w.t("The audit log cannot be read: ", "監査ログを読めません: ")) (e.to_string()) },
        }
        h2 { (w.t("Commands", "コマンド")) }
        @match &commands {
            Ok(cs) => {
                table { @for c in cs { tr {
                    td { (w.time(c.issued_at)) }
                    td { (c.command) @if c.resend { " " (w.t("(resent)", "（再送）")) } }
                    td { @match c.ok { Some(true) => (w.t("acknowledged", "応答あり")), Some(false) => (w.t("failed", "失敗")), None => (w.t("no answer yet", "応答なし")) } }
                } } }
            }
            Err(e) => p.note { (e.to_string()) },
        }
    };
    Ok(frame(&w, &v.id, body))
}
