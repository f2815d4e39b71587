#!/usr/bin/env python3
# tests/tools/ckpt_poke.py -- edit a brigade checkpoint or safetensors file in
# place for the bad-input tests, then fix the manifest's size and CRC so that
# only the edited value is wrong. Must not be used outside tests.
#   ckpt_poke.py set STEP_DIR TENSOR VALUE      first element := VALUE (f32)
#   ckpt_poke.py manifest STEP_DIR KEY JSONVAL  manifest[KEY] := JSONVAL
#   ckpt_poke.py rename STEP_DIR FILE OLD NEW   tensor OLD of FILE is named NEW
#   ckpt_poke.py meta STEP_DIR FILE KEY VALUE   FILE's metadata KEY := VALUE
#   ckpt_poke.py init OUT SRC TENSOR DTYPE VALUE  OUT := the parameters of the
#                 safetensors file SRC, with every element of TENSOR set to
#                 VALUE and stored as DTYPE (F32 or F64)
import json, os, struct, sys, zlib


def read_st(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    return b, n, json.loads(b[8:8 + n])


def fix_manifest(step_dir):
    mp = os.path.join(step_dir, 'manifest.json')
    m = json.load(open(mp))
    for f in m['files']:
        b = open(os.path.join(step_dir, f['name']), 'rb').read()
        f['bytes'], f['crc32'] = len(b), zlib.crc32(b) & 0xffffffff
    json.dump(m, open(mp, 'w'))


def main(a):
    if a[0] == 'set':
        step_dir, name, val = a[1], a[2], float(a[3])
        for f in json.load(open(os.path.join(step_dir, 'manifest.json')))['files']:
            p = os.path.join(step_dir, f['name'])
            b, n, h = read_st(p)
            if name in h:
                off = 8 + n + h[name]['data_offsets'][0]
                b = b[:off] + struct.pack('<f', val) + b[off + 4:]
                open(p, 'wb').write(b)
        fix_manifest(step_dir)
    elif a[0] in ('rename', 'meta'):
        p = os.path.join(a[1], a[2])
        b, n, h = read_st(p)
        if a[0] == 'rename':
            h[a[4]] = h.pop(a[3])
        else:
            h.setdefault('__metadata__', {})[a[3]] = a[4]
        j = json.dumps(h)
        j += ' ' * (-len(j) % 8)
        open(p, 'wb').write(struct.pack('<Q', len(j)) + j.encode() + b[8 + n:])
        fix_manifest(a[1])
    elif a[0] == 'manifest':
        mp = os.path.join(a[1], 'manifest.json')
        m = json.load(open(mp))
        m[a[2]] = json.loads(a[3])
        json.dump(m, open(mp, 'w'))
    elif a[0] == 'init':
        out, src, name, dt, val = a[1], a[2], a[3], a[4], float(a[5])
        b, n, h = read_st(src)
        hdr, data = {}, b''
        for k, t in h.items():
            if k == '__metadata__' or '.adam_' in k or '.momentum' in k:
                continue
            raw = b[8 + n + t['data_offsets'][0]:8 + n + t['data_offsets'][1]]
            kd = t['dtype']
            if k == name:
                cnt = len(raw) // 4
                kd = dt
                raw = struct.pack('<%d%s' % (cnt, 'f' if dt == 'F32' else 'd'), *([val] * cnt))
            hdr[k] = {'dtype': kd, 'shape': t['shape'],
                      'data_offsets': [len(data), len(data) + len(raw)]}
            data += raw
        j = json.dumps(hdr)
        j += ' ' * (-len(j) % 8)
        open(out, 'wb').write(struct.pack('<Q', len(j)) + j.encode() + data)

main(sys.argv[1:])
