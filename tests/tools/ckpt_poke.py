#!/usr/bin/env python3
# tests/tools/ckpt_poke.py -- edit a brigade checkpoint or safetensors file in
# place for the bad-input tests, then fix the manifest's size and CRC so that
# only the edited value is wrong. Must not be used outside tests.
#   ckpt_poke.py set STEP_DIR TENSOR VALUE      first element := VALUE (f32)
#   ckpt_poke.py manifest STEP_DIR KEY JSONVAL  manifest[KEY] := JSONVAL
#   ckpt_poke.py write FILE TENSOR DTYPE VALUE  new safetensors file, one
#                                               1-element tensor (F32 or F64)
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
    elif a[0] == 'manifest':
        mp = os.path.join(a[1], 'manifest.json')
        m = json.load(open(mp))
        m[a[2]] = json.loads(a[3])
        json.dump(m, open(mp, 'w'))
    elif a[0] == 'write':
        path, name, dt, val = a[1], a[2], a[3], float(a[4])
        data = struct.pack('<f' if dt == 'F32' else '<d', val)
        h = json.dumps({name: {'dtype': dt, 'shape': [1], 'data_offsets': [0, len(data)]}})
        h += ' ' * (-len(h) % 8)
        open(path, 'wb').write(struct.pack('<Q', len(h)) + h.encode() + data)


main(sys.argv[1:])
