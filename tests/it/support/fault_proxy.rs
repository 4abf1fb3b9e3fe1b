//! A fault-injecting HTTP proxy between the client under test and the real registry.
//!
//! It speaks just enough HTTP/1.1: it reads each request (headers and a `Content-Length` body),
//! forwards it on a fresh upstream connection with `Connection: close`, reads the whole answer,
//! and writes it back, unless a [`Fault`] rule matches first. Rules match on method and a path
//! substring and fire `times` times. Every request is recorded.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Read half of the request body, then drop the connection.
    ResetMidBody,
    /// Answer with this status (and `Retry-After`, if given) without forwarding.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
    /// Forward, then send only half of the response body and close.
    TruncateBody,
    /// Forward, then flip one byte in the middle of the response body.
    CorruptBody,
    /// Answer 307 with `Location` pointing at the same URL.
    RedirectLoop,
    /// Answer 200 with a JSON "manifest" of this many bytes.
    HugeManifest(usize),
    /// Answer 307 with `Location: {base}{path}` (another host: storage back ends do this).
    RedirectTo(String),
    /// Read the request, then answer nothing for this long and close.
    Stall(std::time::Duration),
    /// Answer with a canned response: status, extra headers, JSON body.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Answer the mount POST with 202 and a fresh upload session, as registries that refuse
    /// mounts do (forwards a plain POST upstream).
    RefuseMount,
}

/// A rule: method, path substring, fault, remaining count.
#[derive(Debug, Clone)]
pub struct Rule {
    pub method: &'static str,
    pub path_contains: String,
    pub fault: Fault,
    pub times: usize,
}

/// The request log: (method, path, fault applied).
pub type RequestLog = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// A running proxy.
pub struct FaultProxy {
    /// `127.0.0.1:PORT` of the proxy.
    pub addr: String,
    rules: Arc<Mutex<Vec<Rule>>>,
    /// Every request seen: (method, path, fault applied).
    pub log: RequestLog,
    /// For every request: its path and whether it carried `Authorization`.
    pub authorization: Arc<Mutex<Vec<(String, bool)>>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::new(Mutex::new(Vec::new()));
        let log: RequestLog = Arc::new(Mutex::new(Vec::new()));
        let authorization = Arc::new(Mutex::new(Vec::new()));
        let (r, l, a, up) = (
            rules.clone(),
            log.clone(),
            authorization.clone(),
            upstream.to_string(),
        );
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (r, l, a, up) = (r.clone(), l.clone(), a.clone(), up.clone());
                std::thread::spawn(move || {
                    let _ = handle(stream, &up, &r, &l, &a);
                });
            }
        });
        FaultProxy {
            addr,
            rules,
            log,
            authorization,
        }
    }

    /// Adds a rule firing `times` times.
    pub fn add(&self, method: &'static str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method,
            path_contains: path_contains.to_string(),
            fault,
            times,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// How many times faults fired.
    pub fn faults_fired(&self) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, f)| f.is_some())
            .count()
    }
}

struct Request {
    method: String,
    target: String,
    head: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut parts = line.trim_end().split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/").to_string();
    let mut head = Vec::new();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.trim_end().split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
            head.push((k.to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(Request {
        method,
        target,
        head,
        body: Vec::with_capacity(len),
    }))
}

fn content_length(req: &Request) -> usize {
    req.head
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn handle(
    client: TcpStream,
    upstream: &str,
    rules: &Mutex<Vec<Rule>>,
    log: &Mutex<Vec<(String, String, Option<String>)>>,
    authorization: &Mutex<Vec<(String, bool)>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut out = client;
    while let Some(mut req) = read_request(&mut reader)? {
        let len = content_length(&req);
        let has_auth = req
            .head
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        authorization
            .lock()
            .unwrap()
            .push((req.target.clone(), has_auth));
        let fault = {
            let mut rules = rules.lock().unwrap();
            let hit = rules.iter_mut().find(|r| {
                r.times > 0 && r.method == req.method && req.target.contains(&r.path_contains)
            });
            hit.map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
        };
        log.lock().unwrap().push((
            req.method.clone(),
            req.target.clone(),
            fault.as_ref().map(|f| format!("{f:?}")),
        ));
        if let Some(Fault::ResetMidBody) = fault {
            let mut half = vec![0u8; len / 2];
            reader.read_exact(&mut half)?;
            let _ = out.shutdown(Shutdown::Both);
            return Ok(());
        }
        req.body.resize(len, 0);
        reader.read_exact(&mut req.body)?;
        match &fault {
            Some(Fault::Status {
                status,
                retry_after,
            }) => {
                let extra = retry_after
                    .as_ref()
                    .map(|r| format!("Retry-After: {r}\r\n"))
                    .unwrap_or_default();
                let body = format!(
                    r#"{{"errors":[{{"code":"UNAVAILABLE","message":"injected {status}"}}]}}"#
                );
                write!(out, "HTTP/1.1 {status} Injected\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
                continue;
            }
            Some(Fault::Respond {
                status,
                headers,
                body,
            }) => {
                let extra: String = headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\r\n"))
                    .collect();
                write!(out, "HTTP/1.1 {status} Canned\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
                continue;
            }
            Some(Fault::Stall(d)) => {
                std::thread::sleep(*d);
                let _ = out.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::RedirectTo(base)) => {
                write!(out, "HTTP/1.1 307 Temporary Redirect\r\nLocation: {base}{}\r\nContent-Length: 0\r\n\r\n", req.target)?;
                continue;
            }
            Some(Fault::RedirectLoop) => {
                write!(
                    out,
                    "HTTP/1.1 307 Temporary Redirect\r\nLocation: {}\r\nContent-Length: 0\r\n\r\n",
                    req.target
                )?;
                continue;
            }
            Some(Fault::HugeManifest(n)) => {
                write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: {n}\r\n\r\n")?;
                let chunk = vec![b' '; 64 * 1024];
                let mut left = *n;
                while left > 0 {
                    let k = left.min(chunk.len());
                    if out.write_all(&chunk[..k]).is_err() {
                        return Ok(());
                    }
                    left -= k;
                }
                continue;
            }
            Some(Fault::RefuseMount) => {
                // Drop the mount parameters: the registry opens a plain upload session (202).
                let path = req.target.split('?').next().unwrap_or("").to_string();
                req.target = path;
            }
            _ => {}
        }
        let response = forward(upstream, &req)?;
        let split = find(&response, b"\r\n\r\n").map_or(response.len(), |i| i + 4);
        let (head, body) = response.split_at(split);
        match fault {
            Some(Fault::TruncateBody) => {
                out.write_all(head)?;
                out.write_all(&body[..body.len() / 2])?;
                let _ = out.shutdown(Shutdown::Both);
                return Ok(());
            }
            Some(Fault::CorruptBody) if !body.is_empty() => {
                let mut body = body.to_vec();
                let mid = body.len() / 2;
                body[mid] ^= 0xff;
                out.write_all(head)?;
                out.write_all(&body)?;
            }
            _ => out.write_all(&response)?,
        }
        out.flush()?;
        // The upstream answered with `Connection: close`; so do we.
        let _ = out.shutdown(Shutdown::Both);
        return Ok(());
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends `req` upstream with `Connection: close` and reads the whole answer.
fn forward(upstream: &str, req: &Request) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect(upstream)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (k, v) in &req.head {
        if k.eq_ignore_ascii_case("connection") {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    up.flush()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    Ok(response)
}
