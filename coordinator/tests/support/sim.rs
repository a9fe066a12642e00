//! Simulated participants driving the sans-IO secure-aggregation client over real HTTP (reqwest).
#![allow(dead_code)]

use confide_common::api::{RoundStage, RoundTask, TaskResponse};
use confide_common::secagg::messages::ControlMessage;
use confide_common::secagg::{KeyDirectory, RoutedShares, SecAggClient, UnmaskingRequest};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use serde_json::Value;

#[derive(Clone)]
pub struct Http {
    pub base: String,
    pub client: reqwest::Client,
}

impl Http {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.trim_end_matches('/').to_string(),
            client: reqwest::Client::new(),
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> reqwest::Result<reqwest::Response> {
        self.client
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
    }

    pub async fn get_json(&self, path: &str, token: &str) -> (u16, Value) {
        let r = self.get(path, token).await.expect("GET");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.expect("POST");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Result<(u16, String)> {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await.unwrap_or_default()))
    }
}

/// One participant: its credential, its update and weight, and its secure-aggregation client for the round.
pub struct Sim {
    pub id: i64,
    pub cred: String,
    pub update: Vec<f32>,
    pub weight: u32,
    /// Quantised input (w·Δ with the weight coordinate) actually sent in the last round.
    pub sent_input: Option<Vec<u32>>,
    client: Option<(i64, SecAggClient)>,
    rng: ChaCha20Rng,
    /// A computed message whose upload failed in transport; re-sent before anything else.
    pending: Option<(String, &'static str, Vec<u8>, RoundStage)>,
}

impl Sim {
    pub fn new(id: i64, cred: String, update: Vec<f32>, weight: u32) -> Self {
        Self {
            id,
            cred,
            update,
            weight,
            sent_input: None,
            client: None,
            rng: ChaCha20Rng::from_seed(rand::random()),
            pending: None,
        }
    }

    pub async fn task(&self, http: &Http) -> Option<RoundTask> {
        let (status, v) = http.get_json("/v1/participant/task", &self.cred).await;
        assert_eq!(status, 200, "task: {v}");
        match serde_json::from_value::<TaskResponse>(v).expect("task JSON") {
            TaskResponse::Idle => None,
            TaskResponse::Round(t) => Some(*t),
        }
    }

    /// Answers the current stage if it is due; returns the stage answered.
    pub async fn step(&mut self, http: &Http) -> Option<RoundStage> {
        self.step_before(http, RoundStage::Finished).await
    }

    /// Answers the current stage if it is due and comes before `stop` (so that a test can hold everyone at a
    /// stage however fast the coordinator moves); returns the stage answered.
    pub async fn step_before(&mut self, http: &Http, stop: RoundStage) -> Option<RoundStage> {
        if let Some((path, ct, body, stage)) = self.pending.take() {
            return match http.post_raw(&path, &self.cred, ct, body.clone()).await {
                Ok((status, _)) => (status == 202).then_some(stage),
                Err(_) => {
                    self.pending = Some((path, ct, body, stage));
                    None
                }
            };
        }
        let task = self.task(http).await?;
        if task.submitted || task.stage as u8 >= stop as u8 {
            return None;
        }
        let rid = task.round_id;
        let path = format!(
            "/v1/participant/rounds/{rid}/messages/{}",
            task.stage.as_str()
        );
        let broadcast = format!(
            "/v1/participant/rounds/{rid}/broadcast/{}",
            task.stage.as_str()
        );
        let (ct, body) = match task.stage {
            RoundStage::AdvertiseKeys => {
                let (client, msg) =
                    SecAggClient::new(task.protocol.clone(), task.participant_index, &mut self.rng)
                        .expect("client");
                self.client = Some((rid, client));
                ("application/json", msg.to_json().into_bytes())
            }
            RoundStage::ShareKeys => {
                let (_, text) = http
                    .get(&broadcast, &self.cred)
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()
                    .map(|t| (0, t))?;
                let dir = KeyDirectory::from_json(&text).ok()?;
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                (
                    "application/json",
                    client
                        .handle_key_directory(&dir, &mut self.rng)
                        .expect("share keys")
                        .to_json()
                        .into_bytes(),
                )
            }
            RoundStage::MaskedInputCollection => {
                let text = http
                    .get(&broadcast, &self.cred)
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let routed = RoutedShares::from_json(&text).ok()?;
                let scaled: Vec<f32> = self.update.iter().map(|x| x * self.weight as f32).collect();
                let input = task
                    .quantisation
                    .quantize(&scaled, self.weight, &mut self.rng)
                    .expect("quantise");
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                let masked = client.handle_routed_shares(&routed, &input).expect("mask");
                self.sent_input = Some(input);
                ("application/octet-stream", masked.encode())
            }
            RoundStage::Unmasking => {
                let text = http
                    .get(&broadcast, &self.cred)
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                let req = UnmaskingRequest::from_json(&text).ok()?;
                let client = &mut self.client.as_mut().filter(|(r, _)| *r == rid)?.1;
                (
                    "application/json",
                    // An honest client answers once: a task read that raced the round's end
                    // (it still says Unmasking) must not make it answer again.
                    client
                        .handle_unmasking_request(&req)
                        .ok()?
                        .to_json()
                        .into_bytes(),
                )
            }
            RoundStage::Finished => return None,
        };
        let (status, text) = match http.post_raw(&path, &self.cred, ct, body.clone()).await {
            Ok(r) => r,
            Err(_) => {
                self.pending = Some((path, ct, body, task.stage));
                return None;
            }
        };
        assert!(
            status == 202 || status == 409,
            "posting {}: {status} {text}",
            task.stage.as_str()
        );
        (status == 202).then_some(task.stage)
    }
}

/// Polls until `done` holds (or panics after `secs`).
pub async fn wait_until<F, Fut>(secs: u64, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < until {
        if done().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}
