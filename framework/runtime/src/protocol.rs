//! The wire protocol between stages, and the Zenoh keys it uses.
//!
//! Every stage output is a stream of sequence-numbered records. The producer
//! publishes [`DataMsg`]s on the output's data key; each consumer answers on
//! the output's control key with [`CtlMsg`]s: cumulative acknowledgements and
//! requests to resend. The producer keeps every record that some consumer has
//! not acknowledged, and never has more than the consumer's window
//! outstanding: that is what bounds memory across processes (credit-based
//! backpressure), and what lets a consumer that started late, or missed a
//! message, catch up (Zenoh's own reliability is per hop only).
//!
//! Layout of each message: `docs/wire.md`.

pub use rill_core::wire::*;

/// `rill/<pipeline>/<stage>/out` or `rill/<pipeline>/<stage>/out/<output>`.
pub fn data_key(pipeline: &str, stage_key: &str, output: Option<&str>) -> String {
    match output {
        None => format!("rill/{pipeline}/{stage_key}/out"),
        Some(o) => format!(
            "rill/{pipeline}/{stage_key}/out/{}",
            rill_core::spec::key_safe(o)
        ),
    }
}

/// `rill/<pipeline>/<stage>/ack` or `rill/<pipeline>/<stage>/ack/<output>`.
pub fn ctl_key(pipeline: &str, stage_key: &str, output: Option<&str>) -> String {
    match output {
        None => format!("rill/{pipeline}/{stage_key}/ack"),
        Some(o) => format!(
            "rill/{pipeline}/{stage_key}/ack/{}",
            rill_core::spec::key_safe(o)
        ),
    }
}

/// `rill/<pipeline>/<stage>/alive/<epoch>/<session>`: the liveliness
/// token a stage holds while its process runs, naming its epoch (16 hex
/// digits) and its Zenoh session (so a restarted process's token is not
/// mistaken for its predecessor's). Producers resend to a consumer that
/// comes up, consumers ask a producer that comes up for what they miss, and
/// take data only from an epoch a live token announces.
pub fn alive_key(pipeline: &str, stage_key: &str, epoch: u64, session: &str) -> String {
    format!("rill/{pipeline}/{stage_key}/alive/{epoch:016x}/{session}")
}

/// The liveliness token a producer holds once consumer `consumer` has
/// acknowledged the end of its stream: a consumer that finished waits for
/// it before its process leaves, so an acknowledgement lost in a link cut
/// is sent again rather than waited for forever by the producer.
pub fn ended_key(pipeline: &str, producer_key: &str, consumer_key: &str) -> String {
    format!("rill/{pipeline}/{producer_key}/ended/{consumer_key}")
}

/// The key expression of every token of a stage.
pub fn alive_keys(pipeline: &str, stage_key: &str) -> String {
    format!("rill/{pipeline}/{stage_key}/alive/**")
}

/// The epoch and session a token's key names.
pub fn token_of_alive_key(key: &str) -> Option<(u64, String)> {
    let mut parts = key.rsplit('/');
    let session = parts.next()?;
    let hex = parts.next()?;
    if hex.len() != 16 || session.is_empty() {
        return None;
    }
    Some((u64::from_str_radix(hex, 16).ok()?, session.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = ProducerId {
            stage: "a".into(),
            output: Some("errors".into()),
            epoch: 7,
        };
        let m = DataMsg::Batch {
            producer: p.clone(),
            first_seq: 42,
            records: vec![rill_core::record! {"x" => 1}],
        };
        assert_eq!(decode_data(&encode_data(&m).unwrap()).unwrap(), m);
        let c = CtlMsg::Resend {
            consumer: "b".into(),
            epoch: 7,
            from: 3,
        };
        assert_eq!(decode_ctl(&encode_ctl(&c).unwrap()).unwrap(), c);
        assert_eq!(
            data_key("p", "s", Some("my errors")),
            "rill/p/s/out/my_errors"
        );
        let k = alive_key("p", "s", 0xabc, "z1");
        assert_eq!(k, "rill/p/s/alive/0000000000000abc/z1");
        assert_eq!(token_of_alive_key(&k), Some((0xabc, "z1".into())));
        assert_eq!(token_of_alive_key("rill/p/s/alive/xyz/z1"), None);
    }
}
