//! The simulated functions behind the demo's two function routes, so the
//! workloads a serverless model platform runs answer like the real ones:
//! - `anomaly-score`: real-time anomaly scoring of a JSON batch of sensor
//!   readings (z-scores against the batch; `anomaly` above 2.0);
//! - `image-recognition`: an image body in (PNG, JPEG, GIF, WebP), labels
//!   with confidences out (deterministic per image).

use serde_json::{json, Value};

/// The workload a function path names, if any: `Ok` its answer, `Err` a
/// bad input (a 400).
pub fn answer(path: &str, body: &[u8]) -> Option<Result<Value, String>> {
    if path.contains("anomaly-score") {
        return Some(anomaly_score(body));
    }
    if path.contains("image-recognition") {
        return Some(image_recognition(body));
    }
    None
}

fn reading(v: &Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.get("value").and_then(Value::as_f64))
}

fn anomaly_score(body: &[u8]) -> Result<Value, String> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        "expected JSON: {\"readings\": [numbers or {\"sensor\", \"value\"}]}".to_string()
    })?;
    let list = v
        .get("readings")
        .or(Some(&v))
        .and_then(Value::as_array)
        .ok_or("expected a `readings` list")?;
    let values: Vec<f64> = list
        .iter()
        .map(reading)
        .collect::<Option<_>>()
        .ok_or("every reading must be a number or {\"value\": number}")?;
    if values.is_empty() {
        return Err("no readings".into());
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = (values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut anomalies = Vec::new();
    let scores: Vec<Value> = values
        .iter()
        .zip(list)
        .enumerate()
        .map(|(i, (x, raw))| {
            let z = if std > 0.0 {
                (x - mean).abs() / std
            } else {
                0.0
            };
            let anomaly = z > 2.0;
            if anomaly {
                anomalies.push(i);
            }
            json!({
                "index": i,
                "sensor": raw.get("sensor").cloned().unwrap_or(Value::Null),
                "value": x,
                "score": (z * 1000.0).round() / 1000.0,
                "anomaly": anomaly,
            })
        })
        .collect();
    Ok(json!({
        "model": "sim-zscore-v1",
        "count": values.len(),
        "mean": mean,
        "std": std,
        "anomalies": anomalies,
        "scores": scores,
    }))
}

fn image_recognition(body: &[u8]) -> Result<Value, String> {
    if body.is_empty() {
        return Err("expected an image body (PNG, JPEG, GIF or WebP)".into());
    }
    let format = match body {
        [0x89, b'P', b'N', b'G', ..] => "png",
        [0xff, 0xd8, 0xff, ..] => "jpeg",
        [b'G', b'I', b'F', b'8', ..] => "gif",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => "webp",
        _ => return Err("not an image: expected PNG, JPEG, GIF or WebP".into()),
    };
    const LABELS: [&str; 10] = [
        "cat",
        "dog",
        "bicycle",
        "server rack",
        "cloud",
        "mountain",
        "coffee cup",
        "laptop",
        "traffic light",
        "tree",
    ];
    let mut h = body.iter().fold(1469598103934665603u64, |a, b| {
        (a ^ u64::from(*b)).wrapping_mul(1099511628211)
    });
    let mut confidence = 0.97;
    let mut labels = Vec::new();
    let mut used = Vec::new();
    while labels.len() < 3 {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (h >> 33) as usize % LABELS.len();
        if used.contains(&i) {
            continue;
        }
        used.push(i);
        confidence -= ((h >> 40) % 300) as f64 / 1000.0;
        labels.push(
            json!({"label": LABELS[i], "confidence": (confidence * 1000.0_f64).round() / 1000.0}),
        );
    }
    Ok(json!({
        "model": "sim-resnet50",
        "format": format,
        "bytes": body.len(),
        "labels": labels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anomaly_scores_flag_the_outlier() {
        let body = br#"{"readings":[{"sensor":"t1","value":20.1},{"sensor":"t2","value":20.3},{"sensor":"t3","value":19.9},{"sensor":"t4","value":20.0},{"sensor":"t5","value":20.2},{"sensor":"t6","value":55.0}]}"#;
        let v = answer("/api/anomaly-score", body).unwrap().unwrap();
        assert_eq!(v["anomalies"], json!([5]));
        assert_eq!(v["scores"][5]["sensor"], "t6");
        assert!(answer("/api/anomaly-score", b"[1, 2, 3]").unwrap().is_ok());
        assert!(answer("/api/anomaly-score", b"{}").unwrap().is_err());
    }

    #[test]
    fn images_get_stable_labels() {
        let png = [0x89, b'P', b'N', b'G', 1, 2, 3];
        let a = answer("/v1/functions/image-recognition", &png)
            .unwrap()
            .unwrap();
        assert_eq!(a, answer("/x/image-recognition", &png).unwrap().unwrap());
        assert_eq!(a["format"], "png");
        assert_eq!(a["labels"].as_array().unwrap().len(), 3);
        assert!(answer("/image-recognition", b"text").unwrap().is_err());
        assert!(answer("/other", b"x").is_none());
    }
}
