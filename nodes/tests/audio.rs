//! `ReadFromWav` over the WAV encodings it claims, through `rill run`: the
//! same audio stored as 8-, 16-, 24-bit integer (mono and stereo), 32-bit
//! float, WAVE_FORMAT_EXTENSIBLE and a streamed header (length unknown)
//! reads as the same frames; overlapping frames; an encoding it does not
//! decode, and a header asking for gigabytes a frame, are dead letters
//! naming the file.

use std::path::Path;

use rill_testing::*;

const RATE: u32 = 8000;
/// Half a second: 4000 samples.
const LEN: usize = 4000;

fn signal() -> Vec<f64> {
    (0..LEN)
        .map(|i| 0.6 * (2.0 * std::f64::consts::PI * 440.0 * i as f64 / RATE as f64).sin())
        .collect()
}

#[derive(Clone, Copy)]
enum Enc {
    U8,
    I16,
    I24,
    F32,
}

/// Writes `x` on every one of `channels` channels.
fn write_wav(path: &Path, x: &[f64], enc: Enc, channels: u16, extensible: bool, streamed: bool) {
    let (bytes, tag): (u16, u16) = match enc {
        Enc::U8 => (1, 1),
        Enc::I16 => (2, 1),
        Enc::I24 => (3, 1),
        Enc::F32 => (4, 3),
    };
    let mut data = Vec::new();
    for v in x {
        for _ in 0..channels {
            match enc {
                Enc::U8 => data.push(((v * 127.0).round() as i32 + 128) as u8),
                Enc::I16 => data.extend_from_slice(&((v * 32767.0).round() as i16).to_le_bytes()),
                Enc::I24 => {
                    let s = (v * 8_388_607.0).round() as i32;
                    data.extend_from_slice(&s.to_le_bytes()[..3]);
                }
                Enc::F32 => data.extend_from_slice(&(*v as f32).to_le_bytes()),
            }
        }
    }
    let mut fmt = Vec::new();
    fmt.extend_from_slice(&(if extensible { 0xFFFEu16 } else { tag }).to_le_bytes());
    fmt.extend_from_slice(&channels.to_le_bytes());
    fmt.extend_from_slice(&RATE.to_le_bytes());
    fmt.extend_from_slice(&(RATE * (bytes * channels) as u32).to_le_bytes());
    fmt.extend_from_slice(&(bytes * channels).to_le_bytes());
    fmt.extend_from_slice(&(bytes * 8).to_le_bytes());
    if extensible {
        fmt.extend_from_slice(&22u16.to_le_bytes());
        fmt.extend_from_slice(&(bytes * 8).to_le_bytes());
        fmt.extend_from_slice(&0u32.to_le_bytes());
        // the sub-format GUID: the format tag, then the fixed suffix
        fmt.extend_from_slice(&tag.to_le_bytes());
        fmt.extend_from_slice(&[
            0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
        ]);
    }
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&((4 + 8 + fmt.len() + 8 + 8 + 4 + data.len()) as u32).to_le_bytes());
    b.extend_from_slice(b"WAVE");
    // a chunk the reader passes over
    b.extend_from_slice(b"LIST");
    b.extend_from_slice(&4u32.to_le_bytes());
    b.extend_from_slice(b"INFO");
    b.extend_from_slice(b"fmt ");
    b.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
    b.extend_from_slice(&fmt);
    b.extend_from_slice(b"data");
    let len = if streamed {
        u32::MAX
    } else {
        data.len() as u32
    };
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(&data);
    std::fs::write(path, b).unwrap();
}

fn samples(row: &serde_json::Value) -> Vec<f64> {
    row["samples"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[test]
fn every_encoding_reads_as_the_same_frames() {
    let dir = sandbox();
    let d = dir.path().join("in");
    std::fs::create_dir_all(&d).unwrap();
    let x = signal();
    let files = [
        ("u8", Enc::U8, 1, false, false, 0.02),
        ("i16", Enc::I16, 1, false, false, 1e-4),
        ("i16x", Enc::I16, 1, true, false, 1e-4),
        ("i24st", Enc::I24, 2, false, false, 1e-4),
        ("f32", Enc::F32, 1, false, true, 1e-6),
    ];
    for (name, enc, ch, ext, streamed, _) in files {
        write_wav(&d.join(format!("{name}.wav")), &x, enc, ch, ext, streamed);
    }
    // ADPCM (tag 2): not decoded
    write_wav(&d.join("adpcm.wav"), &x, Enc::I16, 1, false, false);
    let mut b = std::fs::read(d.join("adpcm.wav")).unwrap();
    let at = b.windows(4).position(|w| w == b"fmt ").unwrap() + 8;
    b[at] = 2;
    std::fs::write(d.join("adpcm.wav"), &b).unwrap();
    // a hostile header: 4 GHz would make frames of gigabytes
    b[at] = 1;
    b[at + 4..at + 8].copy_from_slice(&4_000_000_000u32.to_le_bytes());
    std::fs::write(d.join("huge.wav"), &b).unwrap();
    let out = run_yaml(
        dir.path(),
        r#"pipeline:
  name: wav-formats
  transforms:
    - type: ReadFromWav
      name: read
      config: {path: 'in/*.wav', frame: 100ms, hop: 50ms, error_handling: {output: bad}}
    - {type: WriteToJson, input: read, config: {path: out.jsonl}}
    - {type: WriteToJson, input: read.bad, config: {path: bad.jsonl}}
"#,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_jsonl(&dir.path().join("out.jsonl"));
    for (name, _, _, _, _, tol) in files {
        let mine: Vec<&serde_json::Value> = rows.iter().filter(|r| r["episode"] == name).collect();
        // 800-sample frames every 400: 1 + ceil((4000 - 800) / 400) = 9
        assert_eq!(mine.len(), 9, "{name}");
        for (i, r) in mine.iter().enumerate() {
            assert_eq!(r["frame"], i as i64, "{name}");
            assert_eq!(r["frames"], 9);
            assert_eq!(r["sample_rate"], RATE as i64);
            assert!((r["start"].as_f64().unwrap() - i as f64 * 0.05).abs() < 1e-9);
            let s = samples(r);
            assert_eq!(s.len(), 800);
            for (j, v) in s.iter().enumerate() {
                let want = x.get(i * 400 + j).copied().unwrap_or(0.0);
                assert!(
                    (v - want).abs() <= tol,
                    "{name} frame {i} sample {j}: {v} vs {want}"
                );
            }
        }
        assert_eq!(
            mine[8]["end"].as_f64().unwrap(),
            0.5,
            "the last frame ends at the end"
        );
    }
    let bad = read_jsonl(&dir.path().join("bad.jsonl"));
    let text = serde_json::to_string(&bad).unwrap();
    assert_eq!(bad.len(), 2, "{text}");
    assert!(
        text.contains("huge.wav: 1 channels at 4000000000 Hz: rill reads up to 64 channels"),
        "{text}"
    );
    assert!(
        text.contains("adpcm.wav: a format rill does not decode (format tag 0x0002"),
        "{text}"
    );
}
