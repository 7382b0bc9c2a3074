/* Guest of realxen scenarios 3 and 5 (save/restore, live migration): a
   boot sector that keeps a counter in its own memory (0x600), bumps it about
   once a second (18 BIOS timer wakeups, IRQ0 ~18.2 Hz), writes it into the
   first word of 128 pages (0x10000-0x8ffff: memory the guest dirties while
   it is migrated) and prints "S35-CNT xxxx" (hex) on Xen's debug port 0xe9
   ("(dN) S35-CNT 002a" in xl dmesg).  The counter lives in guest memory
   only, so a restored or migrated guest that prints the next number ran on
   from the saved memory and CPU state; one that rebooted prints BOOTED and
   0001 again.  Assembled at test time (tests/realxen/conftest.py, as + ld
   as the testbed's mbr.S: -Ttext 0x7c00 --oformat binary). */
    .code16
    .globl _start
_start:
    cli
    cld
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %ss
    mov $0x7c00, %sp
    movw $0, 0x600
    mov $booted, %si
    call puts
    sti
    xor %cx, %cx
wait:
    hlt
    inc %cx
    cmp $18, %cx
    jb wait
    xor %cx, %cx
    incw 0x600
    mov 0x600, %ax
    mov $0x1000, %bx
dirty:
    mov %bx, %es
    mov %ax, %es:0
    add $0x100, %bx
    cmp $0x9000, %bx
    jb dirty
    mov $cnt, %si
    call puts
    mov 0x600, %ax
    mov $4, %di
hex:
    rol $4, %ax
    mov %ax, %dx
    and $0xf, %al
    add $'0', %al
    cmp $'9', %al
    jbe 1f
    add $7, %al
1:  out %al, $0xe9
    mov %dx, %ax
    dec %di
    jnz hex
    mov $'\n', %al
    out %al, $0xe9
    jmp wait
puts:
    lodsb
    test %al, %al
    jz 2f
    out %al, $0xe9
    jmp puts
2:  ret
booted: .asciz "S35-GUEST-BOOTED\n"
cnt: .asciz "S35-CNT "
    .org 510
    .byte 0x55, 0xaa
