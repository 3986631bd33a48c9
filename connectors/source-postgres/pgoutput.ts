// Decoder for the pgoutput logical replication protocol (version 1) and the streaming
// replication envelope around it (XLogData 'w', primary keepalive 'k').
// https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html

export type Lsn = bigint;

export function lsnToText(lsn: Lsn): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}
export function lsnFromText(text: string): Lsn {
  const m = /^([0-9A-Fa-f]+)\/([0-9A-Fa-f]+)$/.exec(text.trim());
  if (!m) throw new Error(`invalid LSN "${text}"`);
  return (BigInt('0x' + m[1]) << 32n) | BigInt('0x' + m[2]);
}

/** A column value in a tuple: null, unchanged TOASTed value (not sent), or its text. */
export type TupleValue = null | { unchanged: true } | string;

export interface RelationColumn {
  name: string;
  typeOid: number;
  isKey: boolean;
}
export interface RelationMessage {
  tag: 'relation';
  oid: number;
  schema: string;
  table: string;
  replicaIdentity: string;
  columns: RelationColumn[];
}

export type PgoutputMessage =
  /** `commitTime`: the transaction's commit time on the server, in ms since the Unix epoch. */
  | { tag: 'begin'; finalLsn: Lsn; xid: number; commitTime: number }
  | { tag: 'commit'; commitLsn: Lsn; endLsn: Lsn }
  | RelationMessage
  | { tag: 'insert'; oid: number; newTuple: TupleValue[] }
  | { tag: 'update'; oid: number; keyTuple?: TupleValue[]; oldTuple?: TupleValue[]; newTuple: TupleValue[] }
  | { tag: 'delete'; oid: number; keyTuple?: TupleValue[]; oldTuple?: TupleValue[] }
  | { tag: 'truncate'; oids: number[] }
  | { tag: 'message'; lsn: Lsn; transactional: boolean; prefix: string; content: string }
  | { tag: 'other' };

class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}
  u8(): number {
    return this.buf[this.pos++];
  }
  i16(): number {
    const v = this.buf.readInt16BE(this.pos);
    this.pos += 2;
    return v;
  }
  i32(): number {
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u32(): number {
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }
  u64(): bigint {
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v;
  }
  cstr(): string {
    const end = this.buf.indexOf(0, this.pos);
    const s = this.buf.toString('utf8', this.pos, end);
    this.pos = end + 1;
    return s;
  }
  bytes(n: number): Buffer {
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  tuple(): TupleValue[] {
    const n = this.i16();
    const out: TupleValue[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const kind = this.u8();
      if (kind === 0x6e /* n */) out[i] = null;
      else if (kind === 0x75 /* u */) out[i] = { unchanged: true };
      else {
        // 't' text (or 'b' binary, which we never request)
        const len = this.i32();
        out[i] = this.bytes(len).toString('utf8');
      }
    }
    return out;
  }
}

export function parsePgoutput(buf: Buffer): PgoutputMessage {
  const r = new Reader(buf);
  const tag = r.u8();
  switch (tag) {
    case 0x42: {
      // B
      const finalLsn = r.u64();
      // Microseconds since 2000-01-01 (PostgreSQL's epoch).
      const commitTime = Number(r.u64() / 1000n + PG_EPOCH_MS);
      return { tag: 'begin', finalLsn, commitTime, xid: r.u32() };
    }
    case 0x43: {
      // C
      r.u8();
      const commitLsn = r.u64();
      const endLsn = r.u64();
      return { tag: 'commit', commitLsn, endLsn };
    }
    case 0x52: {
      // R
      const oid = r.u32();
      const schema = r.cstr();
      const table = r.cstr();
      const replicaIdentity = String.fromCharCode(r.u8());
      const n = r.i16();
      const columns: RelationColumn[] = [];
      for (let i = 0; i < n; i++) {
        const flags = r.u8();
        const name = r.cstr();
        const typeOid = r.u32();
        r.i32();
        columns.push({ name, typeOid, isKey: (flags & 1) === 1 });
      }
      return { tag: 'relation', oid, schema, table, replicaIdentity, columns };
    }
    case 0x49: {
      // I
      const oid = r.u32();
      r.u8(); // 'N'
      return { tag: 'insert', oid, newTuple: r.tuple() };
    }
    case 0x55: {
      // U
      const oid = r.u32();
      let kind = r.u8();
      let keyTuple: TupleValue[] | undefined;
      let oldTuple: TupleValue[] | undefined;
      if (kind === 0x4b /* K */) {
        keyTuple = r.tuple();
        kind = r.u8();
      } else if (kind === 0x4f /* O */) {
        oldTuple = r.tuple();
        kind = r.u8();
      }
      return { tag: 'update', oid, keyTuple, oldTuple, newTuple: r.tuple() };
    }
    case 0x44: {
      // D
      const oid = r.u32();
      const kind = r.u8();
      const t = r.tuple();
      return kind === 0x4b ? { tag: 'delete', oid, keyTuple: t } : { tag: 'delete', oid, oldTuple: t };
    }
    case 0x54: {
      // T
      const n = r.i32();
      r.u8();
      const oids: number[] = [];
      for (let i = 0; i < n; i++) oids.push(r.u32());
      return { tag: 'truncate', oids };
    }
    case 0x4d: {
      // M
      const flags = r.u8();
      const lsn = r.u64();
      const prefix = r.cstr();
      const len = r.i32();
      return { tag: 'message', lsn, transactional: (flags & 1) === 1, prefix, content: r.bytes(len).toString('utf8') };
    }
    default:
      return { tag: 'other' }; // origin, type: nothing to do
  }
}

const PG_EPOCH_MS = 946_684_800_000n;

/** Standby status update: `write` is what we received, `flush` what the destination committed. */
export function standbyStatus(write: Lsn, flush: Lsn, replyRequested = false): Buffer {
  const b = Buffer.alloc(34);
  b[0] = 0x72; // 'r'
  b.writeBigUInt64BE(write, 1);
  b.writeBigUInt64BE(flush, 9);
  b.writeBigUInt64BE(flush, 17);
  b.writeBigUInt64BE((BigInt(Date.now()) - PG_EPOCH_MS) * 1000n, 25);
  b[33] = replyRequested ? 1 : 0;
  return b;
}
