//! Build checks BuildKit also reports, as [`Warning`]s with a location: `MaintainerDeprecated`,
//! `JSONArgsRecommended`, `SecretsUsedInArgOrEnv`, `LegacyKeyValueFormat`,
//! `ConsistentInstructionCasing`, `FromAsCasing`, `StageNameCasing`, `DuplicateStageName`,
//! `ReservedStageName`, `MultipleInstructionsDisallowed`, `ExposeProtoCasing`,
//! `RedundantTargetPlatform`, `WorkdirRelativePath`, and (from the parser) `NoEmptyContinuation`.
//! The `# check=skip=…;error=true` directive is applied by [`apply_check_directive`]. `UndefinedVar` and `UndefinedArgInFrom` need the build environment, so
//! the planner reports them.
//!
//! Rule names and triggers follow `moby/buildkit:frontend/dockerfile/docs/rules/*.md`; the other
//! BuildKit rules (casing, stage names, EXPOSE format…) are not implemented.
use super::ast::{Ast, Node, Span, Warning};
use super::instructions::{CommandLine, Instruction, Stage};
use regex::Regex;
use std::sync::OnceLock;

/// Whether an ARG or ENV name looks like it holds a secret (BuildKit's `SecretsUsedInArgOrEnv`).
pub fn is_secret_name(name: &str) -> bool {
    static RE: OnceLock<(Regex, Regex)> = OnceLock::new();
    let (secret, allowed) = RE.get_or_init(|| {
        (
            Regex::new(
                r"(?i)(?:_|^)(?:apikey|auth|credential|credentials|key|password|pword|passwd|secret|token)(?:_|$)",
            )
            .expect("constant regex is valid"),
            Regex::new(r"(?i)(?:_|^)(?:public)(?:_|$)").expect("constant regex is valid"),
        )
    });
    secret.is_match(name) && !allowed.is_match(name)
}

fn push(out: &mut Vec<Warning>, ast: &Ast, rule: &'static str, message: String, span: Span) {
    out.push(Warning {
        rule,
        message,
        span,
        position: ast.position(span.start),
    });
}

/// Appends the warnings for one validated instruction.
pub(crate) fn check_instruction(i: &Instruction, node: &Node, ast: &Ast, out: &mut Vec<Warning>) {
    let kw = node.keyword_span;
    match i {
        Instruction::Maintainer { .. } => push(
            out,
            ast,
            "MaintainerDeprecated",
            "MAINTAINER instruction is deprecated in favor of using label".into(),
            kw,
        ),
        Instruction::Cmd {
            command: CommandLine::Shell(_),
        }
        | Instruction::Entrypoint {
            command: CommandLine::Shell(_),
        } => push(
            out,
            ast,
            "JSONArgsRecommended",
            format!(
                "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                i.keyword()
            ),
            kw,
        ),
        Instruction::Arg { args } => {
            for a in args.iter().filter(|a| is_secret_name(&a.name)) {
                let msg = format!(
                    "do not use ARG or ENV instructions for sensitive data (ARG {:?})",
                    a.name
                );
                push(out, ast, "SecretsUsedInArgOrEnv", msg, a.span);
            }
        }
        Instruction::Env { pairs } | Instruction::Label { pairs } => {
            let env = matches!(i, Instruction::Env { .. });
            for p in pairs {
                if env && is_secret_name(&p.key) {
                    let msg = format!(
                        "do not use ARG or ENV instructions for sensitive data (ENV {:?})",
                        p.key
                    );
                    push(out, ast, "SecretsUsedInArgOrEnv", msg, p.span);
                }
                if p.legacy {
                    let msg = format!(
                        "\"{} key=value\" should be used instead of legacy \"{} key value\" format",
                        i.keyword(),
                        i.keyword()
                    );
                    push(out, ast, "LegacyKeyValueFormat", msg, p.span);
                }
            }
        }
        Instruction::Onbuild(o) => check_instruction(&o.trigger, node, ast, out),
        _ => {}
    }
}

fn text(ast: &Ast, span: Span) -> &str {
    ast.source.get(span.start..span.end).unwrap_or("")
}

/// Checks that need the whole file: casing, stage names, repeated instructions, WORKDIR.
pub(crate) fn check_file(ast: &Ast, stages: &[Stage], out: &mut Vec<Warning>) {
    // ConsistentInstructionCasing: compare each keyword with the file's majority casing.
    let (mut upper, mut lower) = (0usize, 0usize);
    for n in &ast.nodes {
        let k = text(ast, n.keyword_span);
        if k == k.to_uppercase() {
            upper += 1;
        } else if k == k.to_lowercase() {
            lower += 1;
        }
    }
    let majority_upper = upper >= lower;
    for n in &ast.nodes {
        let k = text(ast, n.keyword_span);
        let ok = if majority_upper {
            k == k.to_uppercase()
        } else {
            k == k.to_lowercase()
        };
        if !ok {
            let case = if majority_upper {
                "uppercase"
            } else {
                "lowercase"
            };
            let msg =
                format!("command '{k}' should match the case of the command majority ({case})");
            push(out, ast, "ConsistentInstructionCasing", msg, n.keyword_span);
        }
    }
    let mut seen: Vec<&str> = Vec::new();
    for (stage, node) in stages
        .iter()
        .zip(ast.nodes.iter().filter(|n| n.keyword == "from"))
    {
        if node.args.len() == 3 {
            let kw = text(ast, node.keyword_span);
            let as_word = &node.args[1].value;
            let kw_upper = kw == kw.to_uppercase();
            let as_upper = as_word == &as_word.to_uppercase();
            if kw_upper != as_upper {
                let msg = "'as' and 'FROM' keywords' casing do not match".to_string();
                push(out, ast, "FromAsCasing", msg, node.args[1].span);
            }
            let written = &node.args[2].value;
            if written != &written.to_lowercase() {
                let msg = format!("stage name '{written}' should be lowercase");
                push(out, ast, "StageNameCasing", msg, node.args[2].span);
            }
        }
        if let Some(name) = stage.name() {
            if matches!(name, "scratch" | "context") {
                let msg =
                    format!("stage name should not use the same name as reserved stage {name:?}");
                push(out, ast, "ReservedStageName", msg, stage.from_command.span);
            }
            if seen.contains(&name) {
                let msg = format!("duplicate stage name {name:?}, stage names should be unique");
                push(out, ast, "DuplicateStageName", msg, stage.from_command.span);
            }
            seen.push(name);
        }
        if stage.from.platform.as_deref() == Some("$TARGETPLATFORM")
            || stage.from.platform.as_deref() == Some("${TARGETPLATFORM}")
        {
            let msg = "setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior".to_string();
            push(
                out,
                ast,
                "RedundantTargetPlatform",
                msg,
                stage.from_command.span,
            );
        }
        check_stage(ast, stage, out);
    }
}

fn check_stage(ast: &Ast, stage: &Stage, out: &mut Vec<Warning>) {
    for kw in ["CMD", "ENTRYPOINT", "HEALTHCHECK"] {
        let uses: Vec<_> = stage
            .commands
            .iter()
            .filter(|c| c.instruction.keyword() == kw)
            .collect();
        if uses.len() > 1 {
            for c in &uses[..uses.len() - 1] {
                let msg = format!(
                    "multiple {kw} instructions should not be used in the same stage because only the last one will be used"
                );
                push(out, ast, "MultipleInstructionsDisallowed", msg, c.span);
            }
        }
    }
    let mut workdir_set = false;
    for c in &stage.commands {
        match &c.instruction {
            Instruction::Workdir { path } => {
                if !workdir_set && !path.starts_with('/') && !path.starts_with('$') {
                    let msg = format!(
                        "relative workdir {path:?} can have unexpected results if the base image changes"
                    );
                    push(out, ast, "WorkdirRelativePath", msg, c.span);
                }
                workdir_set = true;
            }
            Instruction::Expose { ports } => {
                for p in ports {
                    if let Some((_, proto)) = p.rsplit_once('/') {
                        if proto != proto.to_lowercase() {
                            let msg = format!(
                                "defined protocol '{p}' in EXPOSE instruction should be lowercase"
                            );
                            push(out, ast, "ExposeProtoCasing", msg, c.span);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// What the `# check=` directive asks for: warnings to drop and whether the rest are errors.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// Rules to skip (`all` skips every rule).
    pub skip: Vec<String>,
    /// `error=true`: fail the build when a warning remains.
    pub error: bool,
}

/// Parses a `# check=skip=A,B;error=true` value (unknown keys are ignored).
pub fn parse_check_directive(value: &str) -> CheckConfig {
    let mut c = CheckConfig::default();
    for part in value.split(';') {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        match k.trim().to_lowercase().as_str() {
            "skip" => c.skip = v.split(',').map(|s| s.trim().to_string()).collect(),
            "error" => c.error = v.trim().eq_ignore_ascii_case("true"),
            _ => {}
        }
    }
    c
}

/// Drops the warnings the `# check=` directive skips; returns the rest and whether they are
/// errors.
pub fn apply_check_directive(
    warnings: &[Warning],
    directive: Option<&str>,
) -> (Vec<Warning>, bool) {
    let cfg = directive.map(parse_check_directive).unwrap_or_default();
    if cfg.skip.iter().any(|s| s.eq_ignore_ascii_case("all")) {
        return (Vec::new(), cfg.error);
    }
    let kept = warnings
        .iter()
        .filter(|w| !cfg.skip.iter().any(|s| s == w.rule))
        .cloned()
        .collect();
    (kept, cfg.error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(is_secret_name("API_KEY"));
        assert!(is_secret_name("password"));
        assert!(is_secret_name("GITHUB_TOKEN"));
        assert!(!is_secret_name("PUBLIC_KEY"));
        assert!(!is_secret_name("KEYBOARD"));
    }

    fn rules(src: &str) -> Vec<&'static str> {
        let ast = crate::dockerfile::parse(src).unwrap();
        let df = crate::dockerfile::instructions(&ast).unwrap();
        df.warnings.iter().map(|w| w.rule).collect()
    }

    #[test]
    fn file_level_rules() {
        assert_eq!(
            rules("FROM a\nrun x\nRUN y\nRUN z\n"),
            vec!["ConsistentInstructionCasing"]
        );
        assert_eq!(rules("FROM a as b\n"), vec!["FromAsCasing"]);
        assert_eq!(
            rules("FROM a AS b\nFROM a AS b\n"),
            vec!["DuplicateStageName"]
        );
        assert_eq!(rules("FROM a AS scratch\n"), vec!["ReservedStageName"]);
        assert_eq!(
            rules("FROM a\nCMD [\"a\"]\nCMD [\"b\"]\n"),
            vec!["MultipleInstructionsDisallowed"]
        );
        assert_eq!(
            rules("FROM a\nWORKDIR app\nWORKDIR sub\n"),
            vec!["WorkdirRelativePath"]
        );
        assert_eq!(rules("FROM a\nEXPOSE 80/TCP\n"), vec!["ExposeProtoCasing"]);
        assert_eq!(
            rules("FROM --platform=$TARGETPLATFORM a\n"),
            vec!["RedundantTargetPlatform"]
        );
        assert!(rules("FROM a AS b\nRUN x\nWORKDIR /x\n").is_empty());
    }

    #[test]
    fn check_directive_skips_and_escalates() {
        let ast = crate::dockerfile::parse(
            "# check=skip=JSONArgsRecommended;error=true\nFROM a\nMAINTAINER me\nCMD x\n",
        )
        .unwrap();
        let df = crate::dockerfile::instructions(&ast).unwrap();
        let (kept, error) = apply_check_directive(&df.warnings, ast.directive("check"));
        assert!(error);
        assert_eq!(
            kept.iter().map(|w| w.rule).collect::<Vec<_>>(),
            vec!["MaintainerDeprecated"]
        );
        let (kept, _) = apply_check_directive(&df.warnings, Some("skip=all"));
        assert!(kept.is_empty());
    }
}
