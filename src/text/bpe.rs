//! BPE over a GGUF vocabulary, as a `tokenizers` model: both kinds llama.cpp reads.
//!
//! - SentencePiece (`llama`): of all adjacent pairs of pieces whose concatenation is a token,
//!   the one whose token has the highest score merges, until none is left. As merges for the
//!   `tokenizers` crate's BPE, that is every split of every token into two tokens, ranked by the
//!   token's score ([`derive_merges`]); Gemma 3's 262,144 tokens give 514,847 of them, and
//!   deriving them and building BPE's merge table took most of a model load's tokenizer time.
//!   Here the concatenation of a pair is looked up in the vocabulary when the pair is met, which
//!   is what SentencePiece and llama.cpp do, and nothing but the vocabulary is needed.
//! - A merge list (`gpt2`: Llama 3, Qwen, SmolLM): the pair of the lowest rank merges first. The
//!   list is read straight into a table of token ids (the crate's builder takes the merges as
//!   strings and looks every one up again).
//!
//! Either gives the ids of the crate's BPE exactly: the same initial pieces (a character's token,
//! else, for SentencePiece, its `<0xNN>` byte tokens, else the unknown token, consecutive
//! unknowns fused), the same order of merges (a merge list's rank; for SentencePiece its rank in
//! the derived list: the token's score, higher first, then the token's id, then the length of
//! its left part; equal ranks go left to right), and the same check of a queued pair against the
//! pieces as they are when it comes up. Serialized (for `tokenizer.json`) it is that BPE, built on
//! demand ([`Bpe::to_bpe`]).

use std::cmp::Ordering;
use std::collections::hash_map::RandomState;
use std::collections::{BinaryHeap, HashMap};
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hashbrown::HashTable;

use serde::{Serialize, Serializer};
use tokenizers::models::bpe::{BpeTrainer, Vocab, BPE};
use tokenizers::{Model, Token};

/// One token's part in merging.
#[derive(Clone, Copy)]
struct Flags {
    /// Its text maps to it (the first of the ids sharing a text): only those are pieces.
    first: bool,
    /// SentencePiece: normal, user-defined and unused tokens merge; control, byte and unknown
    /// tokens do not.
    mergeable: bool,
}

/// Which pair merges first.
enum Ranking {
    /// SentencePiece: a pair merges into the token it spells, by that token's score.
    Scores(Vec<f32>),
    /// A merge list: (left, right) → (rank, the merged token).
    Merges {
        table: HashMap<(u32, u32), (u32, u32)>,
        /// A word that is itself a token stays whole (llama.cpp's `ignore_merges`, Llama 3).
        ignore_merges: bool,
    },
}

/// The tokens' texts in one string, and text → the first id with that text: no allocation per
/// token (Gemma 3 has 262,144; as `String`s, a map and a list of them took 20 MB more).
struct Texts {
    all: String,
    /// Where each token's text ends in `all`.
    ends: Vec<u32>,
    /// The first id of each text, found by the text's hash.
    first: HashTable<u32>,
    hasher: RandomState,
}

impl Texts {
    /// The texts, and which ids are the first with theirs.
    fn new(tokens: &[String]) -> (Texts, Vec<bool>) {
        let mut t = Texts {
            all: String::with_capacity(tokens.iter().map(String::len).sum()),
            ends: Vec::with_capacity(tokens.len()),
            first: HashTable::with_capacity(tokens.len()),
            hasher: RandomState::new(),
        };
        let mut firsts = Vec::with_capacity(tokens.len());
        for (i, token) in tokens.iter().enumerate() {
            t.all.push_str(token);
            t.ends.push(t.all.len() as u32);
            let hash = t.hasher.hash_one(token.as_str());
            let first = t
                .first
                .find(hash, |&id| t.text(id) == token.as_str())
                .is_none();
            if first {
                let Texts {
                    first,
                    ends,
                    all,
                    hasher,
                } = &mut t;
                first.insert_unique(hash, i as u32, |&id| {
                    hasher.hash_one(text_in(all, ends, id))
                });
            }
            firsts.push(first);
        }
        (t, firsts)
    }

    fn text(&self, id: u32) -> &str {
        text_in(&self.all, &self.ends, id)
    }

    fn get(&self, text: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(text);
        self.first.find(hash, |&id| self.text(id) == text).copied()
    }

    /// Text → first id, as the `tokenizers` crate keeps a vocabulary.
    fn map<M: FromIterator<(String, u32)>>(&self) -> M {
        self.first
            .iter()
            .map(|&id| (self.text(id).to_string(), id))
            .collect()
    }
}

fn text_in<'a>(all: &'a str, ends: &[u32], id: u32) -> &'a str {
    let i = id as usize;
    let start = if i == 0 { 0 } else { ends[i - 1] as usize };
    &all[start..ends[i] as usize]
}

struct Vocabulary {
    texts: Texts,
    flags: Vec<Flags>,
    ranking: Ranking,
    /// SentencePiece: the `<0xNN>` token of every byte, where the vocabulary has it.
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    longest: usize,
}

/// BPE over a shared GGUF vocabulary (cloning is cheap).
#[derive(Clone)]
pub(crate) struct Bpe(Arc<Vocabulary>);

/// The texts, and each id's flags.
fn index(tokens: &[String], mergeable: impl Fn(u32) -> bool) -> (Texts, Vec<Flags>) {
    let (texts, firsts) = Texts::new(tokens);
    let flags = firsts
        .into_iter()
        .enumerate()
        .map(|(i, first)| Flags {
            first,
            mergeable: mergeable(i as u32),
        })
        .collect();
    (texts, flags)
}

fn longest(tokens: &[String]) -> usize {
    tokens.iter().map(String::len).max().unwrap_or(0)
}

impl Bpe {
    /// SentencePiece BPE. `mergeable(id)` says whether a token of that id takes part in merges;
    /// `unk` is the id whose text stands for text the vocabulary cannot spell (its first id is
    /// used, as BPE looks the unknown token up by text).
    pub(crate) fn sentencepiece(
        tokens: &[String],
        scores: &[f32],
        mergeable: impl Fn(u32) -> bool,
        unk: Option<u32>,
    ) -> Bpe {
        let (texts, flags) = index(tokens, mergeable);
        let bytes = std::array::from_fn(|b| texts.get(&format!("<0x{b:02X}>")));
        let unk = unk
            .and_then(|u| tokens.get(u as usize))
            .and_then(|t| texts.get(t));
        Bpe(Arc::new(Vocabulary {
            texts,
            flags,
            ranking: Ranking::Scores(scores.to_vec()),
            bytes,
            unk,
            longest: longest(tokens),
        }))
    }

    /// BPE with a merge list, each merge two tokens' texts separated by a space (split, as
    /// llama.cpp does, at the first space after the first character). Merges that name a text
    /// the vocabulary does not have are left out (llama.cpp never forms those pieces either); a
    /// merge without a space is an error, returned as that merge.
    pub(crate) fn with_merges(
        tokens: &[String],
        merges: &[String],
        ignore_merges: bool,
    ) -> Result<Bpe, String> {
        let (texts, flags) = index(tokens, |_| true);
        let mut table = HashMap::with_capacity(merges.len());
        let mut joined = String::new();
        let mut rank = 0u32;
        for m in merges {
            let first = m.chars().next().map_or(0, char::len_utf8);
            let Some(space) = m[first..].find(' ').map(|p| p + first) else {
                return Err(m.clone());
            };
            let (a, b) = (&m[..space], &m[space + 1..]);
            joined.clear();
            joined.push_str(a);
            joined.push_str(b);
            if let (Some(a), Some(b), Some(new)) = (texts.get(a), texts.get(b), texts.get(&joined))
            {
                // As the crate's BPE: a pair listed twice keeps its later rank.
                table.insert((a, b), (rank, new));
                rank += 1;
            }
        }
        Ok(Bpe(Arc::new(Vocabulary {
            texts,
            flags,
            ranking: Ranking::Merges {
                table,
                ignore_merges,
            },
            bytes: [None; 256],
            unk: None,
            longest: longest(tokens),
        })))
    }

    /// The same tokenizer as the `tokenizers` crate's BPE (for SentencePiece, with
    /// [`derive_merges`]).
    pub(crate) fn to_bpe(&self) -> tokenizers::Result<BPE> {
        let v = &self.0;
        let vocab: Vocab = v.texts.map();
        let text = |id: u32| v.texts.text(id).to_string();
        match &v.ranking {
            Ranking::Scores(scores) => {
                let merges = derive_merges(&v.texts, scores, |id| self.merges(id));
                let mut builder = BPE::builder()
                    .vocab_and_merges(vocab, merges)
                    .byte_fallback(true)
                    .fuse_unk(true);
                if let Some(u) = v.unk {
                    builder = builder.unk_token(text(u));
                }
                builder.build()
            }
            Ranking::Merges {
                table,
                ignore_merges,
            } => {
                let mut ranked: Vec<(u32, u32, u32)> =
                    table.iter().map(|(&(a, b), &(r, _))| (r, a, b)).collect();
                ranked.sort_unstable();
                let merges = ranked.into_iter().map(|(_, a, b)| (text(a), text(b)));
                BPE::builder()
                    .vocab_and_merges(vocab, merges.collect())
                    .ignore_merges(*ignore_merges)
                    .build()
            }
        }
    }

    fn merges(&self, id: u32) -> bool {
        self.0.flags[id as usize].mergeable
    }

    /// What merging `a` and `b` gives: its rank and token, `None` when they do not merge.
    fn pair(&self, text: &str, a: &Piece, b: &Piece, buf: &mut String) -> Option<Merge> {
        let v = &self.0;
        let scores = match &v.ranking {
            Ranking::Merges { table, .. } => {
                let &(rank, id) = table.get(&(a.id, b.id))?;
                return Some(Merge {
                    score: 0.0,
                    rank,
                    cut: 0,
                    id,
                    pos: 0,
                });
            }
            Ranking::Scores(scores) => scores,
        };
        if !(self.merges(a.id) && self.merges(b.id)) {
            return None;
        }
        let (left, right) = (v.texts.text(a.id), v.texts.text(b.id));
        if left.is_empty() || right.is_empty() || left.len() + right.len() > v.longest {
            return None;
        }
        // A piece that spells its stretch of the text is looked up there, without a copy.
        let joined = if a.spells && b.spells && a.at + a.len == b.at {
            &text[a.at..b.at + b.len]
        } else {
            buf.clear();
            buf.push_str(left);
            buf.push_str(right);
            buf.as_str()
        };
        let id = v.texts.get(joined)?;
        self.merges(id).then(|| Merge {
            score: scores[id as usize],
            rank: id,
            cut: left.len() as u32,
            id,
            pos: 0,
        })
    }
}

/// SentencePiece BPE as merges: every split of a token into two tokens merges with the token's
/// score, higher scores first (then by token id, then by where the split is).
fn derive_merges(
    texts: &Texts,
    scores: &[f32],
    mergeable: impl Fn(u32) -> bool,
) -> Vec<(String, String)> {
    let mut merges: Vec<(f32, u32, usize, &str, &str)> = Vec::new();
    for id in 0..texts.ends.len() as u32 {
        let t = texts.text(id);
        if !mergeable(id) || texts.get(t) != Some(id) {
            continue;
        }
        for (cut, _) in t.char_indices().skip(1) {
            let (l, r) = t.split_at(cut);
            let ok = |s: &str| texts.get(s).is_some_and(&mergeable);
            if ok(l) && ok(r) {
                merges.push((scores[id as usize], id, cut, l, r));
            }
        }
    }
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    merges
        .into_iter()
        .map(|(_, _, _, l, r)| (l.to_string(), r.to_string()))
        .collect()
}

/// A piece of the text being tokenized.
#[derive(Clone, Copy)]
struct Piece {
    id: u32,
    /// Where its text starts, and its length in bytes (0 once merged into the piece before it).
    at: usize,
    len: usize,
    /// Its token's text is `text[at..at + len]` (not so for byte and unknown tokens).
    spells: bool,
    prev: Option<usize>,
    next: Option<usize>,
}

/// A queued merge of the piece at `pos` with the next one into token `id`, ranked by `score`
/// (higher first), then `rank` and `cut` (lower first): for SentencePiece the token's score, its
/// id and the length of the left part; for a merge list only `rank`, the merge's place in it.
#[derive(Clone, Copy)]
struct Merge {
    score: f32,
    rank: u32,
    cut: u32,
    id: u32,
    pos: usize,
}

impl Ord for Merge {
    /// Greater comes first: the higher score, then the lower rank, the shorter left part, the
    /// position further left.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then(o.rank.cmp(&self.rank))
            .then(o.cut.cmp(&self.cut))
            .then(o.pos.cmp(&self.pos))
    }
}
impl PartialOrd for Merge {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for Merge {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for Merge {}

impl Bpe {
    /// The initial pieces of `text`, as BPE makes them.
    fn pieces(&self, text: &str) -> Vec<Piece> {
        let v = &self.0;
        let mut pieces: Vec<Piece> = Vec::with_capacity(text.len());
        let push = |pieces: &mut Vec<Piece>, id: u32, at: usize, len: usize, spells: bool| {
            let i = pieces.len();
            if let Some(last) = pieces.last_mut() {
                last.next = Some(i);
            }
            pieces.push(Piece {
                id,
                at,
                len,
                spells,
                prev: i.checked_sub(1),
                next: None,
            });
        };
        // A pending unknown token: (where it starts, its length).
        let mut unk: Option<(usize, usize)> = None;
        for (at, c) in text.char_indices() {
            let s = &text[at..at + c.len_utf8()];
            if let Some(id) = v.texts.get(s) {
                if let (Some((u_at, u_len)), Some(u)) = (unk.take(), v.unk) {
                    push(&mut pieces, u, u_at, u_len, false);
                }
                push(&mut pieces, id, at, s.len(), true);
                continue;
            }
            let bytes: Option<Vec<u32>> = s.bytes().map(|b| v.bytes[b as usize]).collect();
            if let Some(bytes) = bytes {
                // As BPE: a pending unknown token waits past the bytes.
                for (k, id) in bytes.into_iter().enumerate() {
                    push(&mut pieces, id, at + k, 1, false);
                }
                continue;
            }
            if v.unk.is_some() {
                unk = Some(match unk {
                    Some((u_at, u_len)) => (u_at, u_len + s.len()),
                    None => (at, s.len()),
                });
            }
        }
        if let (Some((u_at, u_len)), Some(u)) = (unk, v.unk) {
            push(&mut pieces, u, u_at, u_len, false);
        }
        pieces
    }
}

impl Model for Bpe {
    /// Never used: a GGUF vocabulary is not trained here.
    type Trainer = BpeTrainer;

    fn tokenize(&self, text: &str) -> tokenizers::Result<Vec<Token>> {
        if text.is_empty() {
            return Ok(Vec::new());
        }
        if let Ranking::Merges {
            ignore_merges: true,
            ..
        } = self.0.ranking
        {
            if let Some(id) = self.0.texts.get(text) {
                return Ok(vec![Token::new(id, text.to_string(), (0, text.len()))]);
            }
        }
        let mut pieces = self.pieces(text);
        let mut buf = String::new();
        let mut queue: BinaryHeap<Merge> = pieces
            .windows(2)
            .enumerate()
            .filter_map(|(pos, w)| {
                let m = self.pair(text, &w[0], &w[1], &mut buf)?;
                Some(Merge { pos, ..m })
            })
            .collect();
        while let Some(top) = queue.pop() {
            let left = pieces[top.pos];
            let Some(next) = left.next.filter(|_| left.len != 0) else {
                continue;
            };
            let right = pieces[next];
            // A pair that has changed since it was queued.
            if self
                .pair(text, &left, &right, &mut buf)
                .is_none_or(|m| m.id != top.id)
            {
                continue;
            }
            pieces[top.pos] = Piece {
                id: top.id,
                len: left.len + right.len,
                spells: left.spells && right.spells && left.at + left.len == right.at,
                next: right.next,
                ..left
            };
            pieces[next].len = 0;
            if let Some(after) = right.next {
                pieces[after].prev = Some(top.pos);
            }
            let merged = pieces[top.pos];
            if let Some(p) = merged.prev {
                if let Some(m) = self.pair(text, &pieces[p], &merged, &mut buf) {
                    queue.push(Merge { pos: p, ..m });
                }
            }
            if let Some(n) = merged.next {
                if let Some(m) = self.pair(text, &merged, &pieces[n], &mut buf) {
                    queue.push(Merge { pos: top.pos, ..m });
                }
            }
        }
        // Offsets as BPE gives them: each piece's length after the previous one's end.
        let mut end = 0;
        Ok(pieces
            .iter()
            .filter(|p| p.len != 0)
            .map(|p| {
                let start = end;
                end += p.len;
                Token::new(p.id, self.0.texts.text(p.id).to_string(), (start, end))
            })
            .collect())
    }

    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.0.texts.get(token)
    }

    fn id_to_token(&self, id: u32) -> Option<String> {
        let i = id as usize;
        (self.0.flags.get(i)?.first).then(|| self.0.texts.text(id).to_string())
    }

    fn get_vocab(&self) -> HashMap<String, u32> {
        self.0.texts.map()
    }

    fn get_vocab_size(&self) -> usize {
        self.0.texts.first.len()
    }

    fn save(&self, _folder: &Path, _prefix: Option<&str>) -> tokenizers::Result<Vec<PathBuf>> {
        Err("a vocabulary read from GGUF is saved as tokenizer.json".into())
    }

    fn get_trainer(&self) -> BpeTrainer {
        BpeTrainer::default()
    }
}

impl Serialize for Bpe {
    /// As the `tokenizers` crate's BPE ([`Bpe::to_bpe`]), which reads it back.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_bpe()
            .map_err(|e| serde::ser::Error::custom(e.to_string()))?
            .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: the same cases on every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    const ALPHABET: [&str; 6] = ["a", "b", "c", "▁", "é", "日"];

    /// Tokens over the first `letters` letters of [`ALPHABET`], with every kind of tie and gap:
    /// equal scores, ids that share a text, tokens that split several ways, unmergeable tokens,
    /// missing byte tokens.
    fn vocab(rng: &mut Rng, letters: usize) -> (Vec<String>, Vec<f32>, Vec<bool>) {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into()];
        let mut mergeable = vec![false, false];
        for b in 0..=255u8 {
            // Some bytes have no token: characters that need them become <unk>.
            if rng.below(5) != 0 {
                tokens.push(format!("<0x{b:02X}>"));
                mergeable.push(false);
            }
        }
        for a in ALPHABET {
            tokens.push(a.into());
            mergeable.push(true);
        }
        for _ in 0..120 {
            let len = 2 + rng.below(4);
            tokens.push((0..len).map(|_| ALPHABET[rng.below(letters)]).collect());
            // A few never merge (control tokens spelled like text).
            mergeable.push(rng.below(10) != 0);
        }
        let scores = (0..tokens.len()).map(|_| -(rng.below(8) as f32)).collect();
        (tokens, scores, mergeable)
    }

    #[test]
    fn same_pieces_as_bpe_with_derived_merges() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        // Besides the letters: a character with no token ('x'), one with only some byte tokens.
        let others = ["x", "\u{1F600}"];
        for _ in 0..100 {
            // Few letters make tokens that overlap and split several ways.
            let letters = 2 + rng.below(ALPHABET.len() - 1);
            let (tokens, scores, mergeable) = vocab(&mut rng, letters);
            let unk = [None, Some(0)][rng.below(2)];
            let spm = Bpe::sentencepiece(&tokens, &scores, |i| mergeable[i as usize], unk);
            let bpe = spm.to_bpe().unwrap();
            for _ in 0..200 {
                let len = rng.below(24);
                let text: String = (0..len)
                    .map(|_| match rng.below(10) {
                        0 => others[rng.below(2)],
                        _ => ALPHABET[rng.below(letters)],
                    })
                    .collect();
                assert_eq!(
                    spm.tokenize(&text).unwrap(),
                    bpe.tokenize(&text).unwrap(),
                    "{text:?}"
                );
            }
        }
    }

    /// A merge list over random tokens (pairs listed twice, pairs naming texts the vocabulary
    /// lacks, tokens that share a text), with and without `ignore_merges`: the crate's BPE with
    /// the same list gives the same pieces.
    #[test]
    fn merge_lists_give_the_crates_pieces() {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        for _ in 0..100 {
            let letters = 2 + rng.below(ALPHABET.len() - 1);
            let (tokens, _, _) = vocab(&mut rng, letters);
            let word = |rng: &mut Rng| -> String {
                let len = 1 + rng.below(3);
                (0..len).map(|_| ALPHABET[rng.below(letters)]).collect()
            };
            let merges: Vec<String> = (0..150)
                .map(|_| format!("{} {}", word(&mut rng), word(&mut rng)))
                .collect();
            let ignore = rng.below(2) == 1;
            let ours = Bpe::with_merges(&tokens, &merges, ignore).unwrap();
            let theirs = ours.to_bpe().unwrap();
            for _ in 0..200 {
                let len = rng.below(16);
                // Letters, and one with no token ('x'), which BPE without a fallback drops.
                let text: String = (0..len)
                    .map(|_| match rng.below(letters + 1) {
                        i if i == letters => "x",
                        i => ALPHABET[i],
                    })
                    .collect();
                assert_eq!(
                    ours.tokenize(&text).unwrap(),
                    theirs.tokenize(&text).unwrap(),
                    "{text:?}"
                );
            }
        }
        assert_eq!(
            Bpe::with_merges(&["a".into()], &["ab".into()], false).err(),
            Some("ab".to_string())
        );
    }

    #[test]
    fn merges_follow_scores() {
        let tokens: Vec<String> = ["<unk>", "a", "b", "c", "ab", "bc", "abc"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let scores = [0.0, -1.0, -2.0, -3.0, -5.0, -4.0, -6.0];
        let spm = Bpe::sentencepiece(&tokens, &scores, |i| i != 0, Some(0));
        let merges = derive_merges(&spm.0.texts, &scores, |i| i != 0);
        let m: Vec<(&str, &str)> = merges
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        assert_eq!(m, [("b", "c"), ("a", "b"), ("a", "bc"), ("ab", "c")]);
        // "bc" (-4) before "ab" (-5); "abc" from "a" + "bc".
        let ids: Vec<u32> = spm.tokenize("abc").unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, [6]);
        let ids: Vec<u32> = spm.tokenize("abab").unwrap().iter().map(|t| t.id).collect();
        assert_eq!(ids, [4, 4]);
    }

    #[test]
    fn serializes_as_bpe() {
        let (tokens, scores, mergeable) = vocab(&mut Rng(7), 3);
        let spm = Bpe::sentencepiece(&tokens, &scores, |i| mergeable[i as usize], Some(0));
        let json = serde_json::to_value(&spm).unwrap();
        assert_eq!(json["type"], "BPE");
        assert_eq!(json["byte_fallback"], true);
        let merges = derive_merges(&spm.0.texts, &scores, |i| mergeable[i as usize]);
        assert_eq!(json["merges"].as_array().unwrap().len(), merges.len());
    }
}
