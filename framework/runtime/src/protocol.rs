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

/// `rill/<pipeline>/<stage>/alive`: the liveliness token a stage holds
/// while its process runs (producers resend to a consumer that comes up,
/// consumers ask a producer that comes up for what they miss).
pub fn alive_key(pipeline: &str, stage_key: &str) -> String {
    format!("rill/{pipeline}/{stage_key}/alive")
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
    }
}
