"""``nova-xen-stubdom inspect-stream FILE [--key HEX]``: list its records.

Shows each record's layer, type, offset and length, page counts of page
records, our optional records, and whether the authentication tags verify
with the given key, so an operator can see why a restore was refused: the
first error is printed with the record type and byte offset, and the exit
status is 1.
"""

import argparse
import json
import mmap
import os
import sys
from typing import List, Optional, Sequence

from nova_xen_stubdom.emucore import _native


def _parse_key(args: argparse.Namespace) -> Optional[bytes]:
    if args.key and args.key_file:
        raise SystemExit('use --key or --key-file, not both')
    if args.key_file:
        with open(args.key_file, 'rb') as f:
            raw = f.read().strip()
        try:
            return bytes.fromhex(raw.decode())
        except ValueError:
            return raw
    if args.key:
        try:
            return bytes.fromhex(args.key)
        except ValueError:
            raise SystemExit('--key must be hexadecimal') from None
    return None


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog='nova-xen-stubdom inspect-stream',
        description=__doc__.split('\n\n')[0],
    )
    parser.add_argument('file', help='save image or captured migration stream')
    parser.add_argument('--key', help='stream key in hex: verify the tags')
    parser.add_argument(
        '--key-file', help='file holding the key (hex or raw bytes)'
    )
    parser.add_argument(
        '--all',
        action='store_true',
        help='one line per record (default: runs of page records squashed)',
    )
    parser.add_argument(
        '--json', action='store_true', help='machine-readable output'
    )
    args = parser.parse_args(argv)
    try:
        _native.load()
    except ImportError as exc:
        print(exc, file=sys.stderr)
        return 2
    from nova_xen_stubdom import emucore

    key = _parse_key(args)
    size = os.path.getsize(args.file)
    rows: List[dict] = []
    error = None
    totals = dict(
        raw_pages=0,
        zero_pages=0,
        xbzrle_pages=0,
        records=0,
        tags=0,
        tags_verified=0,
        optional=0,
    )
    with open(args.file, 'rb') as f:
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b''
        records = emucore.StreamReader(mm, key=key).records(
            verify_tags=key is not None
        )
        try:
            for rec in records:
                totals['records'] += 1
                totals['optional'] += rec.optional
                pages = rec.info.get('pages')
                if pages is not None:
                    totals[
                        {
                            'PAGE_DATA': 'raw_pages',
                            'NX_ZERO_RUNS': 'zero_pages',
                            'NX_XBZRLE_PAGES': 'xbzrle_pages',
                        }[rec.name]
                    ] += pages
                if rec.name == 'NX_AUTH_TAG':
                    totals['tags'] += 1
                    totals['tags_verified'] += bool(rec.info.get('verified'))
                row = dict(
                    offset=rec.offset,
                    layer=rec.layer,
                    type=rec.name,
                    rtype='0x%08x' % rec.rtype,
                    length=rec.length,
                    optional=rec.optional,
                    nrec=1,
                    **{k: v for k, v in rec.info.items()},
                )
                prev = rows[-1] if rows else None
                if (
                    not args.all
                    and prev
                    and pages is not None
                    and prev['type'] == row['type']
                    and 'pages' in prev
                ):
                    prev['nrec'] += 1
                    prev['pages'] += pages
                    prev['length'] += rec.length
                    continue
                rows.append(row)
        except emucore.StreamError as exc:
            # Drop the traceback: its frames hold views of the mapping.
            error = exc.with_traceback(None)
        finally:
            records.close()
            rec = None
        if size:
            mm.close()
    verdict = 'ok'
    if error is not None:
        verdict = 'refused'
    elif totals['tags'] and key is None:
        verdict = 'authenticated stream, tags not checked (no --key)'
    if args.json:
        out = dict(
            file=args.file,
            bytes=size,
            records=rows,
            totals=totals,
            verdict=verdict,
        )
        if error is not None:
            out['error'] = dict(
                message=error.msg,
                offset=error.offset,
                type=error.rtype_name,
                layer=error.layer,
                kind=type(error).__name__,
            )
        print(json.dumps(out, indent=1))
        return 1 if error is not None else 0
    print('%s: %d bytes' % (args.file, size))
    print(
        '%10s  %-6s %-24s %10s  %s'
        % ('offset', 'layer', 'record', 'length', 'details')
    )
    for r in rows:
        details = []
        if r['nrec'] > 1:
            details.append('%d records' % r['nrec'])
        for k in (
            'pages',
            'count',
            'seq',
            'final',
            'verified',
            'crc',
            'covered',
            'emulator_id',
            'index',
            'keys',
            'stream_id',
            'skipped',
        ):
            if k in r:
                details.append('%s=%s' % (k, r[k]))
        if r['type'] == 'NX_AUTH_TAG' and 'verified' not in r:
            details.append('not checked')
        print(
            '%10d  %-6s %-24s %10d  %s%s'
            % (
                r['offset'],
                r['layer'],
                r['type'],
                r['length'],
                '[optional] ' if r['optional'] else '',
                ' '.join(details),
            )
        )
    print(
        'pages: %d raw, %d zero, %d xbzrle; %d records (%d optional); '
        'tags %d/%d verified'
        % (
            totals['raw_pages'],
            totals['zero_pages'],
            totals['xbzrle_pages'],
            totals['records'],
            totals['optional'],
            totals['tags_verified'],
            totals['tags'],
        )
    )
    if error is not None:
        print('REFUSED: %s: %s' % (type(error).__name__, error))
        return 1
    print('verdict: %s' % verdict)
    return 0


if __name__ == '__main__':
    sys.exit(main())
