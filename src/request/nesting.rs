//! The nesting pre-scan of `objects`: one linear pass over the YAML text that
//! refuses input nested deeper than [`MAX_NESTING`] before any YAML parser sees
//! it (deeply nested flow collections parse in super-linear time).

/// Deepest nesting of collections `objects` may have, counting block
/// indentation levels, compact `- - ` entries and flow `[`/`{` together. A
/// real SecretProviderClass needs about five.
pub const MAX_NESTING: usize = 32;

/// Refuses YAML nested deeper than [`MAX_NESTING`], in one linear pass over
/// the text before any YAML parser sees it.
///
/// It reads only as much YAML as nesting needs: quoted scalars, comments and
/// block scalars (`|`, `>`: a template's `{{ ... }}`) are skipped, everything
/// else counts. Where it is unsure whether a quote or `#` starts a scalar or a
/// comment, it assumes not and counts what follows, so it may refuse odd YAML
/// but never lets deep nesting through to the parser.
pub(super) fn check_nesting(raw: &str) -> Result<(), String> {
    let text = raw.as_bytes();
    let too_deep = || format!("is nested deeper than {MAX_NESTING} levels");
    let mut i = 0;
    // Open flow collections (`[`, `{`).
    let mut flow = 0usize;
    // Columns of the enclosing block nodes.
    let mut indents: Vec<usize> = Vec::new();
    // Block nesting of the current line.
    let mut block = 0usize;
    // While in a block scalar: lines indented more than this are its text.
    let mut block_scalar: Option<usize> = None;
    while i < text.len() {
        // At the start of a line.
        let line_end = text[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(text.len(), |p| i + p);
        let indent = text[i..line_end].iter().take_while(|&&b| b == b' ').count();
        let blank = text[i + indent..line_end]
            .iter()
            .all(|b| b.is_ascii_whitespace());
        if let Some(parent) = block_scalar {
            if blank || indent > parent {
                i = line_end + 1;
                continue;
            }
            block_scalar = None;
        }
        let mut pos = i + indent;
        // Where the line's node starts (after `- ` / `? ` indicators), and
        // the column of the last indicator.
        let mut indicator_col = indent;
        if flow == 0 {
            if blank || text[pos] == b'#' {
                i = line_end + 1;
                continue;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            block = indents.len();
            while pos < line_end
                && matches!(text[pos], b'-' | b'?')
                && text.get(pos + 1).is_none_or(|b| b.is_ascii_whitespace())
            {
                block += 1;
                indicator_col = pos - i;
                pos += 1;
                while pos < line_end && text[pos] == b' ' {
                    pos += 1;
                }
            }
            if block > MAX_NESTING {
                return Err(too_deep());
            }
        }
        let node_col = pos - i;
        // The last non-space byte on this line before `pos` (None: none yet),
        // and whether whitespace followed it.
        let mut prev: Option<u8> = None;
        let mut spaced = false;
        while pos < text.len() && text[pos] != b'\n' {
            let b = text[pos];
            match b {
                b' ' | b'\t' | b'\r' => {
                    spaced = true;
                    pos += 1;
                    continue;
                }
                b'#' if prev.is_none() || spaced => {
                    while pos < text.len() && text[pos] != b'\n' {
                        pos += 1;
                    }
                    continue;
                }
                b'\'' | b'"' if scalar_may_start(prev, spaced) => {
                    pos = skip_quoted(text, pos);
                }
                b'[' | b'{' => {
                    flow += 1;
                    if block + flow > MAX_NESTING {
                        return Err(too_deep());
                    }
                }
                b']' | b'}' => flow = flow.saturating_sub(1),
                b'|' | b'>' if flow == 0 && scalar_may_start(prev, spaced) => {
                    // The rest of the line is the header; the text follows.
                    block_scalar = Some(if pos - i == node_col {
                        indicator_col
                    } else {
                        node_col
                    });
                    while pos < text.len() && text[pos] != b'\n' {
                        pos += 1;
                    }
                    continue;
                }
                _ => {}
            }
            prev = Some(b);
            spaced = false;
            pos += 1;
        }
        i = pos + 1;
    }
    Ok(())
}

/// Whether a quote or block indicator after `prev` (and whitespace, if
/// `spaced`) starts a scalar rather than continuing a plain one.
fn scalar_may_start(prev: Option<u8>, spaced: bool) -> bool {
    match prev {
        None | Some(b'[' | b'{' | b',') => true,
        Some(b':' | b'-' | b'?') => spaced,
        _ => false,
    }
}

/// The index of the closing quote of the quoted scalar opening at `start`
/// (or the end of the text if it is never closed).
fn skip_quoted(text: &[u8], start: usize) -> usize {
    let quote = text[start];
    let mut pos = start + 1;
    while pos < text.len() {
        match text[pos] {
            b'\\' if quote == b'"' => pos += 2,
            b'\'' if quote == b'\'' && text.get(pos + 1) == Some(&b'\'') => pos += 2,
            b if b == quote => return pos,
            _ => pos += 1,
        }
    }
    text.len().saturating_sub(1)
}
